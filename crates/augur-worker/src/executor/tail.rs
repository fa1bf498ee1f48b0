//! A byte ring buffer that keeps only the last `capacity` bytes written to it,
//! so a job that prints gigabytes costs the worker a fixed amount of memory.

use std::collections::VecDeque;

/// The last `capacity` bytes of a stream, plus how many bytes the stream had.
#[derive(Debug, Clone)]
pub struct TailBuffer {
    bytes: VecDeque<u8>,
    capacity: usize,
    total: u64,
}

impl TailBuffer {
    /// An empty buffer that will keep at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        TailBuffer {
            // Small outputs are the common case: grow on demand instead of
            // reserving the full capacity for every attempt.
            bytes: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            total: 0,
        }
    }

    /// Appends `data`, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if data.len() >= self.capacity {
            self.bytes.clear();
            self.bytes.extend(&data[data.len() - self.capacity..]);
            return;
        }
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        self.bytes.drain(..overflow);
        self.bytes.extend(data);
    }

    /// Bytes written in total, including those no longer kept.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether older bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.total > self.bytes.len() as u64
    }

    /// The kept bytes, oldest first.
    pub fn into_vec(self) -> Vec<u8> {
        Vec::from(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_below_capacity() {
        let mut tail = TailBuffer::new(10);
        tail.push(b"abc");
        tail.push(b"def");
        assert!(!tail.truncated());
        assert_eq!(tail.into_vec(), b"abcdef");
    }

    #[test]
    fn keeps_only_the_last_bytes_across_pushes() {
        let mut tail = TailBuffer::new(5);
        tail.push(b"abcd");
        tail.push(b"efg");
        assert_eq!(tail.total(), 7);
        assert!(tail.truncated());
        assert_eq!(tail.into_vec(), b"cdefg");
    }

    #[test]
    fn a_push_larger_than_capacity_keeps_its_end() {
        let mut tail = TailBuffer::new(4);
        tail.push(b"xy");
        tail.push(b"0123456789");
        assert_eq!(tail.into_vec(), b"6789");
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut tail = TailBuffer::new(0);
        tail.push(b"abc");
        assert_eq!(tail.total(), 3);
        assert!(tail.into_vec().is_empty());
    }

    #[test]
    fn matches_a_naive_model() {
        let mut tail = TailBuffer::new(7);
        let mut all = Vec::new();
        for i in 0..50u8 {
            let chunk: Vec<u8> = (0..(i % 11))
                .map(|j| i.wrapping_mul(31).wrapping_add(j))
                .collect();
            tail.push(&chunk);
            all.extend_from_slice(&chunk);
        }
        let expected = all[all.len() - 7..].to_vec();
        assert_eq!(tail.into_vec(), expected);
    }
}
