//! Carving new subnets out of a VPC's free IPv4 space: the lowest aligned blocks of the wanted size that lie in
//! one of the VPC's CIDR blocks and overlap no existing subnet (nor each other).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Block {
    /// The first address, aligned to the prefix.
    pub start: u32,
    pub prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 CIDR block like 10.0.0.0/16")]
    Malformed(String),
    #[error("{0:?} has bits set past its /{1} prefix (did you mean {2}?)")]
    Unaligned(String, u8, Ipv4Block),
}

impl Ipv4Block {
    pub fn new(start: u32, prefix: u8) -> Self {
        Self { start: start & mask(prefix), prefix }
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The last address, inclusive.
    pub fn end(&self) -> u32 {
        self.start + (self.size() - 1) as u32
    }

    pub fn overlaps(&self, other: &Ipv4Block) -> bool {
        self.start <= other.end() && other.start <= self.end()
    }

    pub fn contains(&self, other: &Ipv4Block) -> bool {
        self.start <= other.start && other.end() <= self.end()
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
}

impl FromStr for Ipv4Block {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let malformed = || CidrError::Malformed(text.to_string());
        let (address, prefix) = text.trim().split_once('/').ok_or_else(malformed)?;
        let address: Ipv4Addr = address.parse().map_err(|_| malformed())?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(malformed)?;
        let block = Ipv4Block::new(u32::from(address), prefix);
        if block.start != u32::from(address) {
            return Err(CidrError::Unaligned(text.to_string(), prefix, block));
        }
        Ok(block)
    }
}

impl fmt::Display for Ipv4Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.start), self.prefix)
    }
}

/// Up to `count` free blocks of `/prefix` within `vpc_blocks`, avoiding `occupied`, lowest addresses first.
pub fn free_blocks(vpc_blocks: &[Ipv4Block], occupied: &[Ipv4Block], prefix: u8, count: usize) -> Vec<Ipv4Block> {
    let mut taken: Vec<Ipv4Block> = occupied.to_vec();
    let mut found = Vec::new();
    let mut vpcs = vpc_blocks.to_vec();
    vpcs.sort();
    for vpc in vpcs.iter().filter(|v| v.prefix <= prefix) {
        let step = 1u64 << (32 - u32::from(prefix));
        let mut candidate = u64::from(vpc.start);
        while candidate + step - 1 <= u64::from(vpc.end()) && found.len() < count {
            let block = Ipv4Block::new(candidate as u32, prefix);
            match taken.iter().filter(|t| t.overlaps(&block)).map(|t| u64::from(t.end()) + 1).max() {
                // Skip past what is in the way, to the next aligned start.
                Some(after) => candidate = after.div_ceil(step) * step,
                None => {
                    taken.push(block);
                    found.push(block);
                    candidate += step;
                }
            }
        }
    }
    found
}

/// The free ranges of the VPC as the largest aligned blocks, for an error that shows what room is left.
pub fn free_ranges(vpc_blocks: &[Ipv4Block], occupied: &[Ipv4Block]) -> Vec<Ipv4Block> {
    let mut free = Vec::new();
    for vpc in vpc_blocks {
        let mut start = u64::from(vpc.start);
        let end = u64::from(vpc.end()) + 1;
        while start < end {
            // The largest aligned block at `start` that fits before `end`...
            let mut prefix = (32 - start.trailing_zeros().min(32)) as u8;
            while (1u64 << (32 - u32::from(prefix))) > end - start {
                prefix += 1;
            }
            let mut block = Ipv4Block::new(start as u32, prefix);
            // ...shrunk until nothing occupies it.
            while occupied.iter().any(|o| o.overlaps(&block)) && block.prefix < 32 {
                block = Ipv4Block::new(start as u32, block.prefix + 1);
            }
            if occupied.iter().any(|o| o.overlaps(&block)) {
                start += 1;
                continue;
            }
            free.push(block);
            start += block.size();
        }
    }
    free
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn block(text: &str) -> Ipv4Block {
        text.parse().expect("valid block")
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(block("10.0.0.0/16").to_string(), "10.0.0.0/16");
        assert_eq!(block("10.0.4.0/22").size(), 1024);
        assert!(matches!("10.0.1.0/16".parse::<Ipv4Block>(), Err(CidrError::Unaligned(..))));
        assert!(matches!("10.0.0.0/33".parse::<Ipv4Block>(), Err(CidrError::Malformed(_))));
        assert!(matches!("ten/8".parse::<Ipv4Block>(), Err(CidrError::Malformed(_))));
    }

    #[test]
    fn three_22s_in_the_demo_vpc_skip_the_existing_24s() {
        let vpc = [block("10.0.0.0/16")];
        let occupied = [block("10.0.1.0/24"), block("10.0.2.0/24"), block("10.0.3.0/24")];
        let found = free_blocks(&vpc, &occupied, 22, 3);
        let texts: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["10.0.4.0/22", "10.0.8.0/22", "10.0.12.0/22"]);
    }

    #[test]
    fn a_full_primary_block_moves_on_to_a_secondary_one() {
        let vpc = [block("10.0.0.0/24"), block("100.64.0.0/16")];
        let occupied = [block("10.0.0.0/24")];
        assert_eq!(free_blocks(&vpc, &occupied, 22, 1), vec![block("100.64.0.0/22")]);
    }

    #[test]
    fn free_ranges_describe_what_is_left() {
        let vpc = [block("10.0.0.0/22")];
        let occupied = [block("10.0.1.0/24")];
        let texts: Vec<String> = free_ranges(&vpc, &occupied).iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["10.0.0.0/24", "10.0.2.0/23"]);
    }

    fn arb_block(min_prefix: u8) -> impl Strategy<Value = Ipv4Block> {
        (any::<u32>(), min_prefix..=28u8).prop_map(|(start, prefix)| Ipv4Block::new(start, prefix))
    }

    proptest! {
        #[test]
        fn carved_blocks_are_aligned_inside_the_vpc_and_overlap_nothing(
            vpcs in prop::collection::vec(arb_block(12), 1..3),
            occupied in prop::collection::vec(arb_block(16), 0..12),
            prefix in 16u8..28,
            count in 1usize..5,
        ) {
            let found = free_blocks(&vpcs, &occupied, prefix, count);
            prop_assert!(found.len() <= count);
            for (i, b) in found.iter().enumerate() {
                prop_assert_eq!(b.prefix, prefix);
                prop_assert_eq!(b.start & !mask(prefix), 0);
                prop_assert!(vpcs.iter().any(|v| v.contains(b)), "{} outside the VPC", b);
                prop_assert!(!occupied.iter().any(|o| o.overlaps(b)), "{} overlaps a subnet", b);
                prop_assert!(!found[..i].iter().any(|o| o.overlaps(b)), "{} found twice", b);
            }
        }

        #[test]
        fn it_finds_all_it_asks_for_when_the_space_is_there(vpc in arb_block(12), prefix in 20u8..26) {
            // An empty VPC of at least /16 holds at least 16 blocks of /20 or smaller.
            prop_assume!(vpc.prefix <= 16);
            prop_assert_eq!(free_blocks(&[vpc], &[], prefix, 16).len(), 16);
        }
    }
}
