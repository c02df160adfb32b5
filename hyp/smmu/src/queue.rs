//! The command and event queues (IHI 0070 §3.5): circular buffers of `2^log2` entries whose
//! producer and consumer registers hold an index and a wrap bit (bit `log2`). Equal index and
//! wrap: empty; equal index, different wrap: full.
//!
//! hyp produces commands and consumes events; the SMMU does the other half. The queues'
//! memory is passed in as slices so that this logic is host-tested against a model SMMU.

use crate::cmd::Command;
use crate::event::Event;

/// `SMMU_EVENTQ_PROD.OVFLG` / `SMMU_EVENTQ_CONS.OVACKFLG` (bit 31): the event queue
/// overflowed (records were lost) since the consumer last acknowledged.
pub const OVERFLOW_FLAG: u32 = 1 << 31;
/// `SMMU_CMDQ_CONS.ERR` \[30:24\].
const CONS_ERR_SHIFT: u32 = 24;
const CONS_ERR_MASK: u32 = 0x7f;

/// Memory the command queue lives in, as the driver writes it (a slice in tests; hyp's
/// identity-mapped frames, written with single 64-bit stores, on hardware).
pub trait CommandMemory {
    /// Writes the command `words` into `slot`.
    fn write(&mut self, slot: usize, words: [u64; 2]);
}

/// Memory the event queue lives in, as the driver reads it.
pub trait EventMemory {
    /// The record in `slot`.
    fn read(&self, slot: usize) -> [u64; 4];
}

impl CommandMemory for [[u64; 2]] {
    fn write(&mut self, slot: usize, words: [u64; 2]) {
        self[slot] = words;
    }
}

impl EventMemory for [[u64; 4]] {
    fn read(&self, slot: usize) -> [u64; 4] {
        self[slot]
    }
}

/// A queue's producer and consumer positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    log2: u32,
    prod: u32,
    cons: u32,
}

impl Ring {
    /// An empty ring of `2^log2` entries (`log2` at most 19: the `LOG2SIZE` field).
    pub const fn new(log2: u32) -> Ring {
        assert!(log2 <= 19);
        Ring {
            log2,
            prod: 0,
            cons: 0,
        }
    }

    /// Entries.
    pub const fn capacity(&self) -> usize {
        1 << self.log2
    }

    /// log2 of the entries (the `LOG2SIZE` field of the queue's base register).
    pub const fn log2(&self) -> u32 {
        self.log2
    }

    /// Index and wrap bits.
    const fn ptr_mask(&self) -> u32 {
        (1 << (self.log2 + 1)) - 1
    }

    /// The slot a position refers to.
    pub const fn slot(&self, ptr: u32) -> usize {
        (ptr & ((1 << self.log2) - 1)) as usize
    }

    const fn next(&self, ptr: u32) -> u32 {
        (ptr + 1) & self.ptr_mask()
    }

    /// The producer position (index and wrap).
    pub const fn prod(&self) -> u32 {
        self.prod
    }

    /// The consumer position (index and wrap).
    pub const fn cons(&self) -> u32 {
        self.cons
    }

    /// No entry between consumer and producer.
    pub const fn is_empty(&self) -> bool {
        self.prod == self.cons
    }

    /// Every slot holds an entry not yet consumed.
    pub const fn is_full(&self) -> bool {
        self.prod ^ self.cons == 1 << self.log2
    }

    /// Entries produced and not yet consumed.
    pub const fn len(&self) -> usize {
        (self.prod.wrapping_sub(self.cons) & self.ptr_mask()) as usize
    }

    /// Takes the other side's position from its register (only the index and wrap bits).
    fn set_prod(&mut self, reg: u32) {
        self.prod = reg & self.ptr_mask();
    }

    fn set_cons(&mut self, reg: u32) {
        self.cons = reg & self.ptr_mask();
    }
}

/// Why the SMMU stopped processing commands (`SMMU_CMDQ_CONS.ERR`, IHI 0070 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// `CERROR_ILL` (1): an illegal or unknown command.
    Illegal,
    /// `CERROR_ABT` (2): an abort reading the command.
    Abort,
    /// `CERROR_ATC_INV_SYNC` (3) or a code hyp does not know.
    Other(u8),
}

/// The command queue, producer side.
#[derive(Clone, Copy, Debug)]
pub struct CommandQueue {
    ring: Ring,
}

/// The command queue has no free slot: the caller must wait for the SMMU to consume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

impl CommandQueue {
    /// An empty queue of `2^log2` commands.
    pub const fn new(log2: u32) -> CommandQueue {
        CommandQueue {
            ring: Ring::new(log2),
        }
    }

    /// The positions.
    pub const fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Writes `cmd` into its slot of `mem` (the queue's memory, `capacity` entries) and
    /// returns the value to write to `SMMU_CMDQ_PROD`. The command must be visible to the
    /// SMMU (a `DSB`) before that register write (IHI 0070 §3.5.2).
    pub fn push<M: CommandMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        cmd: Command,
    ) -> Result<u32, QueueFull> {
        if self.ring.is_full() {
            return Err(QueueFull);
        }
        mem.write(self.ring.slot(self.ring.prod), cmd.encode());
        self.ring.prod = self.ring.next(self.ring.prod);
        Ok(self.ring.prod)
    }

    /// Takes `SMMU_CMDQ_CONS`: `Ok(true)` once every command pushed has been consumed (a
    /// `CMD_SYNC` pushed last has then completed), `Err` if the SMMU stopped on an error
    /// (hyp treats that as fatal: the stage-2 invalidations it guarantees may not have run).
    pub fn consumed(&mut self, cons_reg: u32) -> Result<bool, CommandError> {
        self.ring.set_cons(cons_reg);
        match (cons_reg >> CONS_ERR_SHIFT) & CONS_ERR_MASK {
            0 => Ok(self.ring.is_empty()),
            1 => Err(CommandError::Illegal),
            2 => Err(CommandError::Abort),
            e => Err(CommandError::Other(e as u8)),
        }
    }
}

/// The event queue, consumer side.
#[derive(Clone, Copy, Debug)]
pub struct EventQueue {
    ring: Ring,
    /// `OVACKFLG` as last written.
    overflow_ack: u32,
}

impl EventQueue {
    /// An empty queue of `2^log2` records.
    pub const fn new(log2: u32) -> EventQueue {
        EventQueue {
            ring: Ring::new(log2),
            overflow_ack: 0,
        }
    }

    /// The positions.
    pub const fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Takes `SMMU_EVENTQ_PROD`; returns whether the queue overflowed since the last call
    /// (records were lost: hyp reports it once). Acknowledging is part of [`Self::cons_reg`].
    pub fn produced(&mut self, prod_reg: u32) -> bool {
        self.ring.set_prod(prod_reg);
        let flag = prod_reg & OVERFLOW_FLAG;
        let overflowed = flag != self.overflow_ack;
        self.overflow_ack = flag;
        overflowed
    }

    /// The next record from `mem` (the queue's memory), if any; the consumer position moves
    /// past it.
    pub fn pop<M: EventMemory + ?Sized>(&mut self, mem: &M) -> Option<Event> {
        if self.ring.is_empty() {
            return None;
        }
        let words = mem.read(self.ring.slot(self.ring.cons));
        self.ring.cons = self.ring.next(self.ring.cons);
        Some(Event::decode(words))
    }

    /// The value to write to `SMMU_EVENTQ_CONS`: the position and `OVACKFLG`.
    pub const fn cons_reg(&self) -> u32 {
        self.ring.cons | self.overflow_ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use std::vec::Vec;

    #[test]
    fn ring_full_and_empty_follow_the_wrap_bit() {
        let mut r = Ring::new(2);
        assert!(r.is_empty() && !r.is_full());
        assert_eq!(r.len(), 0);
        for n in 1..=4 {
            r.prod = r.next(r.prod);
            assert_eq!(r.len(), n);
        }
        assert!(r.is_full() && !r.is_empty());
        assert_eq!(r.prod, 0b100, "index 0 with the wrap bit set");
        r.cons = r.next(r.cons);
        assert!(!r.is_full());
        assert_eq!(r.len(), 3);
        // Both wrap twice: empty again at index 0, wrap 0.
        for _ in 0..4 {
            r.prod = r.next(r.prod);
        }
        for _ in 0..7 {
            r.cons = r.next(r.cons);
        }
        assert!(r.is_empty());
        assert_eq!(r.len(), 0);
    }

    /// A model of the SMMU's command processor: consumes commands in order, stops at an
    /// unknown one with `CERROR_ILL` in `CONS.ERR`.
    fn smmu_consume(ring: &mut Ring, mem: &[[u64; 2]], seen: &mut Vec<Command>) -> u32 {
        while !ring.is_empty() {
            match Command::decode(mem[ring.slot(ring.cons)]) {
                Some(c) => seen.push(c),
                None => return ring.cons | 1 << CONS_ERR_SHIFT,
            }
            ring.cons = ring.next(ring.cons);
        }
        ring.cons
    }

    #[test]
    fn commands_flow_through_a_small_queue_many_times_over() {
        let mut q = CommandQueue::new(3);
        let mut mem = [[0u64; 2]; 8];
        let mut smmu = Ring::new(3);
        let mut seen = Vec::new();
        let mut sent = Vec::new();
        for i in 0..100u16 {
            let cmd = Command::TlbiS12Vmall { vmid: i };
            let prod = loop {
                match q.push(&mut mem[..], cmd) {
                    Ok(p) => break p,
                    Err(QueueFull) => {
                        let cons = smmu_consume(&mut smmu, &mem, &mut seen);
                        assert_eq!(q.consumed(cons), Ok(true));
                    }
                }
            };
            sent.push(cmd);
            smmu.set_prod(prod);
            if i % 3 == 0 {
                let cons = smmu_consume(&mut smmu, &mem, &mut seen);
                assert_eq!(q.consumed(cons), Ok(true));
            }
        }
        let cons = smmu_consume(&mut smmu, &mem, &mut seen);
        assert_eq!(q.consumed(cons), Ok(true));
        assert_eq!(seen, sent, "every command, once, in order");
        // A full queue refuses instead of overwriting an unconsumed command.
        for _ in 0..8 {
            q.push(&mut mem[..], Command::Sync).unwrap();
        }
        assert_eq!(q.push(&mut mem[..], Command::Sync), Err(QueueFull));
        assert_eq!(q.consumed(q.ring().cons()), Ok(false));
    }

    #[test]
    fn a_command_error_stops_the_queue_and_is_reported() {
        let mut q = CommandQueue::new(2);
        let mut mem = [[0u64; 2]; 4];
        let mut smmu = Ring::new(2);
        q.push(&mut mem[..], Command::Sync).unwrap();
        let prod = q.push(&mut mem[..], Command::Sync).unwrap();
        mem[1] = [0x7f, 0]; // not a command
        smmu.set_prod(prod);
        let cons = smmu_consume(&mut smmu, &mem, &mut Vec::new());
        assert_eq!(q.consumed(cons), Err(CommandError::Illegal));
        assert_eq!(q.ring().cons(), 1, "CONS points at the failing command");
    }

    #[test]
    fn events_are_consumed_in_order_and_overflow_is_acknowledged_once() {
        let mut q = EventQueue::new(1);
        let mut mem = [[0u64; 4]; 2];
        mem[0] = [0x10 | 0x8 << 32, 0, 0x4000_1000, 0];
        mem[1] = [0x13 | 0x10 << 32, 1 << 35, 0x8000_0000, 0];
        assert!(!q.produced(0b10));
        let a = q.pop(&mem[..]).unwrap();
        let b = q.pop(&mem[..]).unwrap();
        assert!(q.pop(&mem[..]).is_none());
        assert_eq!(
            (a.kind, a.sid, a.input),
            (EventType::Translation, 8, 0x4000_1000)
        );
        assert_eq!((b.kind, b.sid, b.read), (EventType::Permission, 0x10, true));
        assert_eq!(q.cons_reg(), 0b10);
        // The SMMU lost records: OVFLG toggles; hyp sees it once and echoes it.
        assert!(q.produced(0b10 | OVERFLOW_FLAG));
        assert_eq!(q.cons_reg(), 0b10 | OVERFLOW_FLAG);
        assert!(!q.produced(0b10 | OVERFLOW_FLAG));
        assert!(q.produced(0b10));
    }
}
