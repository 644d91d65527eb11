//! Bounded fuzzing in unit tests: a seeded generator (`fastrand`), so every run feeds the same
//! inputs and a failure reproduces.

/// A reproducible source of random choices.
pub struct Rng(fastrand::Rng);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(fastrand::Rng::with_seed(seed))
    }

    /// Any `u64`.
    pub fn next(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// In `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n.max(1))
    }

    /// One of `from` (not empty).
    pub fn pick<'a, T: ?Sized>(&mut self, from: &[&'a T]) -> &'a T {
        from[self.below(from.len())]
    }
}
