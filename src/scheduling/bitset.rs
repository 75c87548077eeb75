//! A fixed-size set of instance-type indices. Narrowing a node's options is an AND of a few words.

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    pub fn empty(len: usize) -> Self {
        Self { words: vec![0; len.div_ceil(64)] }
    }

    pub fn full(len: usize) -> Self {
        let mut set = Self::empty(len);
        for i in 0..len {
            set.insert(i);
        }
        set
    }

    /// How many members it can hold.
    pub fn len_bits(&self) -> usize {
        self.words.len() * 64
    }

    pub fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    pub fn and(&self, other: &BitSet) -> BitSet {
        BitSet { words: self.words.iter().zip(&other.words).map(|(a, b)| a & b).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Keeps the members for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        for (w, word) in self.words.iter_mut().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if !keep(w * 64 + bit) {
                    *word &= !(1 << bit);
                }
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, word)| {
            let mut bits = *word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut a = BitSet::full(130);
        assert_eq!(a.len(), 130);
        a.retain(|i| i % 2 == 0);
        assert_eq!(a.len(), 65);
        let mut b = BitSet::empty(130);
        b.insert(4);
        b.insert(5);
        b.insert(128);
        assert_eq!(a.and(&b).iter().collect::<Vec<_>>(), vec![4, 128]);
        assert!(!a.and(&b).is_empty());
        assert!(BitSet::empty(3).is_empty());
    }
}
