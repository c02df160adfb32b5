//! Stage-2 stress (`hyp.stress=N`): while the guest runs, hyp keeps changing the VM's stage 2
//! behind it, to exercise break-before-make, broadcast TLB invalidation and the fault paths.
//!
//! Every N-th exit of vCPU 0, a few pseudo-random guest RAM pages (of the VM's own stage-2
//! granule) that are mapped as pages get one of:
//! - unmap: the guest's next access takes a stage-2 translation fault, which the vCPU's
//!   fault path (`vcpu`) maps back (also for eager VMs);
//! - write-protect: the guest's next write takes a stage-2 permission fault, which restores
//!   write permission and counts the page dirty (as dirty logging would);
//! - migrate: the page moves to another host frame. The mapping is broken first (`unmap`:
//!   break-before-make plus TLBI by IPA for the VM's VMID, broadcast Inner Shareable), so no
//!   vCPU can write the old frame while it is copied; then the IPA is mapped to the new frame.
//!   The IPA page → frame record is what the fault path maps after a later unmap.
//!
//! **Forward progress.** One guest instruction may need several pages at once (its code, its
//! data, every page of the stage-1 walk that translates them), each mapped by its own fault.
//! A step that unmapped one of them again before the instruction retried would make it fault
//! forever (a livelock at `hyp.stress=1`). So every page a vCPU's faults mapped since its PC
//! last changed is pinned: steps leave it alone until that vCPU has moved on.
//!
//! Every change runs with the VM's `s2` lock held; the stress state's own lock is always taken
//! after `s2` (lock order: `s2` → `Stress::state`). The other vCPUs keep running on their CPUs
//! meanwhile: their correctness relies on the stage2 library's break-before-make and broadcast
//! invalidation (Arm ARM D8.16.1, "Using break-before-make when updating translation table
//! entries").

use crate::mem;
use crate::smmu::VmMaintenance;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use el2::arch::cache;
use el2::frames::FrameAlloc;
use spin::mutex::SpinMutex;
use stage2::{AddrRange, Attrs, Ipa, MapOpts, Pa, PageTable};

/// Pages changed per stress step.
const PAGES_PER_STEP: usize = 4;
/// Host frames hyp allocates at most for migrations (beyond the frames freed by them).
const MAX_NEW_FRAMES: usize = 64;
/// Attempts per step to find a mapped page.
const TRIES: usize = 16;
/// The page level (level 3) for every granule (Arm ARM D8.2: the last lookup level).
const PAGE_LEVEL: u32 = 3;
/// Recently faulted pages remembered as targets.
const HOT: usize = 64;
/// Pages pinned per vCPU for the instruction it retries (see "Forward progress"): more than
/// any one A64 instruction needs (two data pages, two code pages and a 5-level stage-1 walk
/// for each address); beyond it the oldest pin goes.
const PINS: usize = 24;

/// One VM's stress state and counters.
pub struct Stress {
    /// Every `period`-th exit of vCPU 0 runs a step.
    pub period: u64,
    state: SpinMutex<State>,
    unmapped: AtomicU64,
    protected: AtomicU64,
    migrated: AtomicU64,
    refaulted: AtomicU64,
    dirty: AtomicU64,
}

struct State {
    /// xorshift64 state.
    rng: u64,
    /// Guest RAM page index (offset / page size) → host frame, for migrated pages.
    moved: BTreeMap<u64, Pa>,
    /// Host frames no page uses (freed by migrations), reused as migration targets.
    free: Vec<Pa>,
    /// Frames taken from `mem::alloc_phys` so far.
    allocated: usize,
    /// Recently faulted RAM page indices (pages the guest uses), a ring of `HOT` entries:
    /// half of the picks come from here, so that the stress hits live data, not only the
    /// mostly idle rest of RAM.
    hot: Vec<u64>,
    /// Next slot of `hot` to overwrite once it is full.
    hot_next: usize,
    /// Per vCPU: the PC of its last stage-2 fault and the pages its faults at that PC mapped
    /// (pinned: no step touches them).
    pins: Vec<(u64, Vec<u64>)>,
}

/// What a step did to one page.
enum Op {
    Unmap,
    Protect,
    Migrate,
}

impl Stress {
    /// Stress every `period`-th exit (`period` ≥ 1) of a VM with `vcpus` vCPUs.
    pub fn new(period: u32, seed: u64, vcpus: usize) -> Stress {
        Stress {
            period: u64::from(period.max(1)),
            state: SpinMutex::new(State {
                // xorshift64 must not start at 0.
                rng: seed | 1,
                moved: BTreeMap::new(),
                free: Vec::new(),
                allocated: 0,
                hot: Vec::with_capacity(HOT),
                hot_next: 0,
                pins: (0..vcpus).map(|_| (u64::MAX, Vec::new())).collect(),
            }),
            unmapped: AtomicU64::new(0),
            protected: AtomicU64::new(0),
            migrated: AtomicU64::new(0),
            refaulted: AtomicU64::new(0),
            dirty: AtomicU64::new(0),
        }
    }

    /// The VM-exit summary line's counts.
    pub fn line(&self, name: &str) -> alloc::string::String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        alloc::format!(
            "vm {name}: stress: {} unmapped, {} write-protected, {} migrated, {} faults re-mapped, {} dirty",
            g(&self.unmapped),
            g(&self.protected),
            g(&self.migrated),
            g(&self.refaulted),
            g(&self.dirty)
        )
    }

    /// One stress step on the VM's RAM `ram`, whose unmigrated pages live at `ram_pa +
    /// offset`. `exits` (vCPU 0's exit count) is mixed into the seed. Errors name the page and
    /// the operation that failed.
    pub fn step(
        &self,
        pt: &mut PageTable<FrameAlloc, VmMaintenance>,
        ram: AddrRange<Ipa>,
        exits: u64,
    ) -> Result<(), alloc::string::String> {
        let page = pt.geometry().page_size();
        let pages = ram.len() / page;
        if pages == 0 {
            return Ok(());
        }
        let mut st = self.state.lock();
        st.reseed(exits);
        let mut done = 0;
        for _ in 0..TRIES {
            if done == PAGES_PER_STEP {
                break;
            }
            let r = st.next();
            let idx = st.pick(r, pages);
            if st.pinned(idx) {
                continue;
            }
            let op = match (r >> 32) % 3 {
                0 => Op::Unmap,
                1 => Op::Protect,
                _ => Op::Migrate,
            };
            if self.change(&mut st, pt, ram.start() + idx * page, idx, op)? {
                done += 1;
            }
        }
        Ok(())
    }

    /// Applies `op` to guest RAM page `idx`, at `ipa`, if it is mapped as a page of the VM's
    /// granule (not a block: a block would be split, which is the library's business but not
    /// this stress's). Whether the page changed.
    fn change(
        &self,
        st: &mut State,
        pt: &mut PageTable<FrameAlloc, VmMaintenance>,
        ipa: Ipa,
        idx: u64,
        op: Op,
    ) -> Result<bool, alloc::string::String> {
        let page = pt.geometry().page_size();
        let Ok(ipas) = AddrRange::from_start_len(ipa, page) else {
            return Ok(false);
        };
        let Some((pa, attrs, level)) = pt.translate(ipa) else {
            return Ok(false);
        };
        if level != PAGE_LEVEL {
            return Ok(false);
        }
        match op {
            Op::Unmap => {
                pt.unmap(ipas)
                    .map_err(|e| alloc::format!("stress: unmap of IPA {ipa:#x}: {e}"))?;
                self.unmapped.fetch_add(1, Ordering::Relaxed);
            }
            Op::Protect => {
                if !attrs.write {
                    return Ok(false);
                }
                pt.protect(ipas, attrs.read_only())
                    .map_err(|e| alloc::format!("stress: write-protect of IPA {ipa:#x}: {e}"))?;
                self.protected.fetch_add(1, Ordering::Relaxed);
            }
            Op::Migrate => return self.migrate(st, pt, ipas, pa, idx),
        }
        Ok(true)
    }

    /// Moves guest RAM page `idx` (the IPAs `ipas`, mapped to frame `pa`) to another host
    /// frame: break, copy, make. `false` when no frame was free (nothing changed).
    fn migrate(
        &self,
        st: &mut State,
        pt: &mut PageTable<FrameAlloc, VmMaintenance>,
        ipas: AddrRange<Ipa>,
        pa: Pa,
        idx: u64,
    ) -> Result<bool, alloc::string::String> {
        let (ipa, page) = (ipas.start(), ipas.len());
        let Some(new) = st.frame(page) else {
            return Ok(false);
        };
        // Break: after this returns, the entry is invalid and every CPU's TLB entries for the
        // IPA in this VMID are gone (TLBI IPAS2E1IS + DSB ISH), so no vCPU can write the old
        // frame while it is copied.
        if let Err(e) = pt.unmap(ipas) {
            st.free.push(new);
            return Err(alloc::format!(
                "stress: unmap of IPA {ipa:#x} to migrate it: {e}"
            ));
        }
        // Without FEAT_S2FWB the guest may have written the old frame through a non-cacheable
        // stage-1 mapping (Arm ARM D8.6.6, combining stage-1 and stage-2 attributes): drop any
        // stale lines before reading it cacheably.
        cache::clean_invalidate_to_poc(pa.identity_va().get(), page);
        // SAFETY: `pa` is the frame this IPA mapped (now unmapped, so no guest access races
        // the copy: other vCPUs fault and wait for the s2 lock held by the caller), `new` a
        // frame of the same size no mapping uses; both are identity-mapped host RAM and do not
        // overlap.
        unsafe {
            el2::arch::guest::copy_bulk(
                new.identity_va().get() as *mut u8,
                pa.identity_va().get() as *const u8,
                page as usize,
            )
        };
        // The guest may map the page non-cacheable at stage 1 (without FWB): make the copy
        // visible at the point of coherency, and drop instructions cached for the new frame's
        // previous contents.
        cache::clean_to_poc(new.identity_va().get(), page);
        cache::invalidate_icache_all();
        let opts = MapOpts {
            skip_cmo: true,
            pages_only: true,
        };
        pt.map(ipas, new, Attrs::ram(), opts).map_err(|e| {
            alloc::format!("stress: map of IPA {ipa:#x} to migrated frame {new:#x}: {e}")
        })?;
        st.moved.insert(idx, new);
        st.free.push(pa);
        self.migrated.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// The host frame that guest RAM page `off / page` lives in (its migrated frame, if any).
    pub fn frame_of(&self, off: u64, page: u64, ram_pa: Pa) -> Pa {
        let idx = off / page;
        let st = self.state.lock();
        st.moved.get(&idx).copied().unwrap_or(ram_pa + idx * page)
    }

    /// Counts a translation fault that mapped guest RAM page `idx` back, and remembers the
    /// page as one the guest uses.
    pub fn count_refault(&self, idx: u64) {
        self.refaulted.fetch_add(1, Ordering::Relaxed);
        self.remember(idx);
    }

    /// Pins page `idx`, which a stage-2 fault of vCPU `vcpu` at guest PC `pc` just mapped or
    /// made writable, until that vCPU faults at another PC ("Forward progress").
    pub fn pin(&self, vcpu: usize, pc: u64, idx: u64) {
        let mut st = self.state.lock();
        let Some((at, pages)) = st.pins.get_mut(vcpu) else {
            return;
        };
        if *at != pc {
            *at = pc;
            pages.clear();
        }
        if pages.len() == PINS {
            pages.remove(0);
        }
        pages.push(idx);
    }

    /// Counts write-protected guest RAM page `idx` written (write permission restored).
    pub fn count_dirty(&self, idx: u64) {
        self.dirty.fetch_add(1, Ordering::Relaxed);
        self.remember(idx);
    }

    fn remember(&self, idx: u64) {
        let mut st = self.state.lock();
        if st.hot.len() < HOT {
            st.hot.push(idx);
        } else {
            let i = st.hot_next;
            st.hot[i] = idx;
            st.hot_next = (i + 1) % HOT;
        }
    }
}

impl State {
    /// Mixes `exits` into the generator (never leaving it at 0, where xorshift64 sticks).
    fn reseed(&mut self, exits: u64) {
        self.rng ^= exits.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if self.rng == 0 {
            self.rng = 1;
        }
    }

    /// The page index among `pages` that random value `r` picks: with its low bit set, one of
    /// the recently faulted pages (when there are any), else any page.
    fn pick(&self, r: u64, pages: u64) -> u64 {
        if r & 1 == 1 && !self.hot.is_empty() {
            let h = self.hot[((r >> 1) % self.hot.len() as u64) as usize];
            h.min(pages - 1)
        } else {
            r % pages
        }
    }

    /// Whether a vCPU's retried instruction needs page `idx`.
    fn pinned(&self, idx: u64) -> bool {
        self.pins.iter().any(|(_, p)| p.contains(&idx))
    }

    /// xorshift64 (Marsaglia 2003).
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// A free host frame of `page` bytes: a freed one, else a new one (up to
    /// `MAX_NEW_FRAMES`); `None` when neither is available (the migration is skipped).
    fn frame(&mut self, page: u64) -> Option<Pa> {
        if let Some(f) = self.free.pop() {
            return Some(f);
        }
        if self.allocated >= MAX_NEW_FRAMES {
            return None;
        }
        let f = mem::alloc_phys(page, page)?;
        self.allocated += 1;
        Some(Pa::new(f))
    }
}
