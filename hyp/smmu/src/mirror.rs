//! One stage 2, two walkers: the CPU's stage-2 maintenance, mirrored to the SMMU.
//!
//! An assigned VM's stage-2 tables are walked by its CPUs and by the SMMU (its STEs point at
//! the same root). `stage2` already emits the CPU side of every change as [`MaintOp`]s in
//! break-before-make order (Arm ARM D8.16.1). [`SmmuMirror`] wraps the VM's maintenance and,
//! for every stage-2 TLBI of that VMID, queues the SMMU's equivalent; at the next `DSB ISH` —
//! where the CPU side waits for its TLBIs to complete, before any new descriptor is written
//! or any table is freed — it issues `CMD_SYNC` and waits for it. So the SMMU has dropped the
//! old translation at the same point of the sequence as the CPUs (IHI 0070 §3.17 "TLB
//! invalidation", §4.7.3 `CMD_SYNC`).

use stage2::{MaintOp, Maintenance};

use crate::cmd::Command;

/// Where the mirror's commands go: hyp's driver for the SMMU's command queue, or a
/// recorder in tests.
pub trait CommandSink {
    /// Queues `cmd`. The SMMU must observe it only after every earlier store of this CPU
    /// (the driver issues `DSB` before writing `SMMU_CMDQ_PROD`, IHI 0070 §3.5.2): so a
    /// descriptor changed before the push is seen changed by the invalidation it asks for.
    fn push(&mut self, cmd: Command);
    /// Queues `CMD_SYNC` and returns once the SMMU has completed it and every command before it.
    fn sync(&mut self);
}

impl<T: CommandSink + ?Sized> CommandSink for &mut T {
    fn push(&mut self, cmd: Command) {
        (**self).push(cmd)
    }
    fn sync(&mut self) {
        (**self).sync()
    }
}

/// A VM's maintenance `inner`, with its stage-2 invalidations also sent to an SMMU.
#[derive(Debug)]
pub struct SmmuMirror<M, S> {
    inner: M,
    sink: S,
    vmid: u16,
    /// SMMU invalidations queued since the last `CMD_SYNC`.
    pending: bool,
}

impl<M: Maintenance, S: CommandSink> SmmuMirror<M, S> {
    /// Mirrors the invalidations of `vmid`'s stage 2 into `sink`.
    pub fn new(inner: M, sink: S, vmid: u16) -> Self {
        SmmuMirror {
            inner,
            sink,
            vmid,
            pending: false,
        }
    }

    /// The wrapped maintenance and the sink.
    pub fn into_parts(self) -> (M, S) {
        (self.inner, self.sink)
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The VMID after a rollover gave the VM a new one (its STEs are rewritten by the caller).
    pub fn set_vmid(&mut self, vmid: u16) {
        self.vmid = vmid;
    }

    /// The SMMU command that mirrors `op`, if any. Stage-1-only operations have none: the
    /// SMMU bypasses stage 1 for hyp's streams.
    fn mirror(&self, op: MaintOp) -> Option<Command> {
        match op {
            MaintOp::TlbiIpas2e1is { vmid, operand } if vmid == self.vmid => {
                Some(Command::TlbiS2Ipa {
                    vmid,
                    // `operand` is IPA >> 12 for every granule (Arm ARM D8.16, TLBI IPAS2E1IS).
                    ipa: operand << 12,
                    leaf: false,
                })
            }
            MaintOp::TlbiVmalls12e1is { vmid } if vmid == self.vmid => {
                Some(Command::TlbiS12Vmall { vmid })
            }
            MaintOp::TlbiAlle1is => Some(Command::TlbiNsnhAll),
            _ => None,
        }
    }
}

impl<M: Maintenance, S: CommandSink> Maintenance for SmmuMirror<M, S> {
    fn op(&mut self, op: MaintOp) {
        self.inner.op(op);
        if let Some(cmd) = self.mirror(op) {
            self.sink.push(cmd);
            self.pending = true;
        }
        if op == MaintOp::DsbIsh && self.pending {
            self.sink.sync();
            self.pending = false;
        }
    }

    #[inline(always)]
    fn store(&mut self, entry_pa: u64, input: u64, level: u32, old: u64, new: u64) {
        self.inner.store(entry_pa, input, level, old, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use alloc::vec::Vec;
    use core::cell::RefCell;
    use stage2::{
        check_bbm, AddrRange, Attrs, CpuFeatures, Event, Geometry, Granule, Ipa, MapOpts, Pa,
        PageTable, VecAlloc,
    };

    /// One log for the CPU-side events and the SMMU's commands, in program order.
    #[derive(Clone, Debug, PartialEq)]
    enum Entry {
        Cpu(Event),
        Smmu(Command),
    }

    #[derive(Clone, Default)]
    struct Log(Rc<RefCell<Vec<Entry>>>);

    impl Maintenance for Log {
        fn op(&mut self, op: MaintOp) {
            self.0.borrow_mut().push(Entry::Cpu(Event::Op(op)));
        }
        fn store(&mut self, entry_pa: u64, input: u64, level: u32, old: u64, new: u64) {
            self.0.borrow_mut().push(Entry::Cpu(Event::Store {
                entry_pa,
                input,
                level,
                old,
                new,
            }));
        }
    }

    impl CommandSink for Log {
        fn push(&mut self, cmd: Command) {
            self.0.borrow_mut().push(Entry::Smmu(cmd));
        }
        fn sync(&mut self) {
            self.0.borrow_mut().push(Entry::Smmu(Command::Sync));
        }
    }

    /// A mirror that forgets `CMD_SYNC` (the planted bug the checks must catch).
    struct NoSync(Log);
    impl CommandSink for NoSync {
        fn push(&mut self, cmd: Command) {
            self.0.push(cmd);
        }
        fn sync(&mut self) {}
    }

    const VMID: u16 = 9;

    /// The SMMU's view of the log: the descriptor stores, with the SMMU's commands written as
    /// the CPU operations they stand for (`TLBI_S2_IPA` as `TLBI IPAS2E1IS`, `TLBI_S12_VMALL`
    /// as `TLBI VMALLS12E1IS`, `CMD_SYNC` as `DSB ISH`). The CPU's own operations are left
    /// out: what must hold for the SMMU must hold on its commands alone.
    fn smmu_view(log: &[Entry]) -> Vec<Event> {
        let mut view = Vec::new();
        for e in log {
            let op = match *e {
                Entry::Cpu(s @ Event::Store { .. }) => {
                    view.push(s);
                    continue;
                }
                Entry::Cpu(Event::Op(_)) => continue,
                Entry::Smmu(Command::TlbiS2Ipa { vmid, ipa, .. }) => MaintOp::TlbiIpas2e1is {
                    vmid,
                    operand: ipa >> 12,
                },
                Entry::Smmu(Command::TlbiS12Vmall { vmid }) => MaintOp::TlbiVmalls12e1is { vmid },
                Entry::Smmu(Command::TlbiNsnhAll) => MaintOp::TlbiAlle1is,
                Entry::Smmu(Command::Sync) => MaintOp::DsbIsh,
                Entry::Smmu(_) => continue,
            };
            // `CommandSink::push`'s contract: the command reaches the SMMU only after the
            // CPU's earlier stores (the driver's DSB before its CMDQ_PROD write).
            view.push(Event::Op(MaintOp::DsbIshSt));
            view.push(Event::Op(op));
        }
        view
    }

    /// Every change to a valid descriptor (removal, new output, new permissions) is followed,
    /// before the operation returns and before the entry is written again, by an SMMU
    /// invalidation covering its input address and then a `CMD_SYNC`.
    fn every_change_reaches_the_smmu(view: &[Event]) -> Result<usize, usize> {
        let mut checked = 0;
        for (i, e) in view.iter().enumerate() {
            let Event::Store {
                entry_pa,
                input,
                old,
                new,
                ..
            } = *e
            else {
                continue;
            };
            if old & 1 == 0 || old == new {
                continue;
            }
            checked += 1;
            let mut invalidated = false;
            let mut done = false;
            for later in &view[i + 1..] {
                match *later {
                    Event::Op(MaintOp::TlbiIpas2e1is { operand, .. })
                        if operand == stage2::tlbi_ipa_operand(stage2::Ipa::new(input)) =>
                    {
                        invalidated = true
                    }
                    Event::Op(MaintOp::TlbiVmalls12e1is { .. } | MaintOp::TlbiAlle1is) => {
                        invalidated = true
                    }
                    Event::Op(MaintOp::DsbIsh) if invalidated => {
                        done = true;
                        break;
                    }
                    Event::Store { entry_pa: pa, .. } if pa == entry_pa => break,
                    _ => {}
                }
            }
            if !done {
                return Err(i);
            }
        }
        Ok(checked)
    }

    fn table<S: CommandSink>(
        g: Granule,
        sink: S,
        log: &Log,
    ) -> PageTable<VecAlloc, SmmuMirror<Log, S>> {
        let geo = Geometry::stage2(g, 40, &CpuFeatures::profile("max").unwrap()).unwrap();
        let m = SmmuMirror::new(log.clone(), sink, VMID);
        PageTable::with_vmid(geo, VMID, VecAlloc::new(), m).unwrap()
    }

    /// Maps, splits a block, remaps to another output, write-protects, unmaps pages and
    /// whole subtrees: every kind of change stage 2 makes behind a running VM.
    fn workout<S: CommandSink>(pt: &mut PageTable<VecAlloc, SmmuMirror<Log, S>>) {
        let p = pt.geometry().page_size();
        let block = pt.geometry().block_size(2).unwrap();
        let base = 4 * block;
        let ram = Attrs::ram();
        let r = |a: u64, b: u64| AddrRange::try_from(Ipa::new(a)..Ipa::new(b)).unwrap();
        pt.map(
            r(base, base + 2 * block),
            Pa::new(0x8000_0000),
            ram,
            MapOpts::default(),
        )
        .unwrap();
        // A page inside the first block moves elsewhere: the block is split (BBM).
        pt.map(
            r(base + p, base + 2 * p),
            Pa::new(0x9000_0000),
            ram,
            MapOpts::PAGES,
        )
        .unwrap();
        pt.protect(r(base, base + 8 * p), Attrs::ram().read_only())
            .unwrap();
        pt.unmap(r(base + 3 * p, base + 5 * p)).unwrap();
        pt.unmap(r(base, base + 2 * block)).unwrap();
        pt.map(
            r(base, base + 16 * p),
            Pa::new(0xa000_0000),
            ram,
            MapOpts::PAGES,
        )
        .unwrap();
        pt.unmap(r(base, base + 16 * p)).unwrap();
    }

    #[test]
    fn the_smmu_sees_every_change_in_break_before_make_order() {
        for g in Granule::ALL {
            let log = Log::default();
            let mut pt = table(g, log.clone(), &log);
            workout(&mut pt);
            let entries = log.0.borrow().clone();
            let view = smmu_view(&entries);
            // The same checker the CPU side's sequence tests use, over the SMMU's commands.
            let oa = 0x0000_ffff_ffff_f000 & !(pt.geometry().page_size() - 1);
            check_bbm(&view, oa).unwrap_or_else(|v| panic!("{}: {v}", g.label()));
            let checked = every_change_reaches_the_smmu(&view)
                .unwrap_or_else(|i| panic!("{}: change at {i} never reached the SMMU", g.label()));
            assert!(
                checked > 8,
                "{}: only {checked} changes exercised",
                g.label()
            );
            // Nothing is left unsynchronised when the last operation returns.
            let last_sync = entries
                .iter()
                .rposition(|e| *e == Entry::Smmu(Command::Sync));
            let last_tlbi = entries
                .iter()
                .rposition(|e| matches!(e, Entry::Smmu(c) if *c != Command::Sync));
            assert!(last_tlbi < last_sync);
            // The CPU side is unchanged by the mirror: its own stream passes as before.
            let cpu: Vec<Event> = entries
                .iter()
                .filter_map(|e| match e {
                    Entry::Cpu(ev) => Some(*ev),
                    Entry::Smmu(_) => None,
                })
                .collect();
            check_bbm(&cpu, oa).unwrap();
        }
    }

    #[test]
    fn a_mirror_without_sync_is_caught() {
        let log = Log::default();
        let mut pt = table(Granule::K4, NoSync(log.clone()), &log);
        workout(&mut pt);
        let view = smmu_view(&log.0.borrow());
        assert!(every_change_reaches_the_smmu(&view).is_err());
    }

    #[test]
    fn other_vmids_and_stage1_operations_are_not_mirrored() {
        let log = Log::default();
        let mut m = SmmuMirror::new(log.clone(), log.clone(), VMID);
        m.op(MaintOp::TlbiIpas2e1is {
            vmid: VMID + 1,
            operand: 1,
        });
        m.op(MaintOp::TlbiVmalle1is { vmid: VMID });
        m.op(MaintOp::TlbiVae2is { operand: 1 });
        m.op(MaintOp::DsbIsh);
        assert!(log.0.borrow().iter().all(|e| matches!(e, Entry::Cpu(_))));
        m.op(MaintOp::TlbiIpas2e1is {
            vmid: VMID,
            operand: 0x12345,
        });
        m.op(MaintOp::DsbIsh);
        let smmu: Vec<Command> = log
            .0
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Entry::Smmu(c) => Some(*c),
                Entry::Cpu(_) => None,
            })
            .collect();
        assert_eq!(
            smmu,
            [
                Command::TlbiS2Ipa {
                    vmid: VMID,
                    ipa: 0x1234_5000,
                    leaf: false
                },
                Command::Sync
            ]
        );
    }
}
