//! Which shard a channel or community belongs to, and which live node should own each
//! shard (rendezvous hashing). Pure functions: every node computes the same answers.
//!
//! Both are fixed forever: changing a hash moves every channel to another shard.

use uuid::Uuid;

/// Virtual shards; a node owns whole shards, never single channels.
pub const SHARDS: u16 = 1024;

/// A shard number, `0..SHARDS`.
pub type Shard = u16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME))
}

/// The splitmix64 finalizer: spreads FNV's weak low bits over the whole word.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard of a channel or community id.
pub fn shard_of(id: Uuid) -> Shard {
    (mix64(fnv1a64(id.as_bytes())) % u64::from(SHARDS)) as Shard
}

/// A node's weight for a shard: the highest weight among live nodes wins it.
fn weight(node_id: &str, shard: Shard) -> u64 {
    let mut key = Vec::with_capacity(node_id.len() + 2);
    key.extend_from_slice(node_id.as_bytes());
    key.extend_from_slice(&shard.to_be_bytes());
    mix64(fnv1a64(&key))
}

/// The live node that should own `shard` (ties to the lower id), if any node is live.
pub fn placement<'a>(shard: Shard, live: &[&'a str]) -> Option<&'a str> {
    live.iter().copied().max_by(|a, b| weight(a, shard).cmp(&weight(b, shard)).then_with(|| b.cmp(a)))
}

/// The key of a node's own advisory lock (held while the node lives): 31 bits of its id's
/// hash, so it reads the same as `pg_locks.objid` (an unsigned column).
pub fn node_lock_key(node_id: &str) -> i32 {
    (mix64(fnv1a64(node_id.as_bytes())) & 0x7fff_ffff) as i32
}

/// Whether a node id is acceptable: `[A-Za-z0-9_-]{1,64}` (it is a NATS subject token).
pub fn valid_node_id(node_id: &str) -> bool {
    (1..=64).contains(&node_id.len())
        && node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_fixed_vectors() {
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // splitmix64's finalizer of 0 is 0, and of 1 a fixed value.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        let id = Uuid::parse_str("0190f5a4-2b3c-7d4e-8f00-112233445566").unwrap();
        assert_eq!(shard_of(id), shard_of(id));
        assert!(shard_of(id) < SHARDS);
        assert_eq!(shard_of(Uuid::nil()), (mix64(fnv1a64(&[0; 16])) % 1024) as u16);
    }

    #[test]
    fn shards_spread_evenly() {
        let mut counts = vec![0u32; SHARDS as usize];
        for n in 0..102_400u128 {
            counts[shard_of(Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
                as usize] += 1;
        }
        // 100 per shard on average; none starved, none doubled.
        assert!(counts.iter().all(|c| (50..=160).contains(c)), "{:?}", counts.iter().minmax());
    }

    trait MinMax {
        fn minmax(self) -> (u32, u32);
    }
    impl<'a, I: Iterator<Item = &'a u32>> MinMax for I {
        fn minmax(self) -> (u32, u32) {
            self.fold((u32::MAX, 0), |(lo, hi), c| (lo.min(*c), hi.max(*c)))
        }
    }

    #[test]
    fn three_nodes_share_the_shards_about_evenly() {
        let nodes = ["n1", "n2", "n3"];
        let mut owned = [0u32; 3];
        for s in 0..SHARDS {
            let winner = placement(s, &nodes).unwrap();
            owned[nodes.iter().position(|n| *n == winner).unwrap()] += 1;
        }
        assert!(owned.iter().all(|c| (290..=395).contains(c)), "{owned:?}");
    }

    #[test]
    fn a_fourth_node_moves_about_a_quarter_and_only_to_itself() {
        let three = ["n1", "n2", "n3"];
        let four = ["n1", "n2", "n3", "n4"];
        let mut moved = 0;
        for s in 0..SHARDS {
            let before = placement(s, &three).unwrap();
            let after = placement(s, &four).unwrap();
            if before != after {
                assert_eq!(after, "n4", "shard {s} moved between old nodes");
                moved += 1;
            }
        }
        assert!((200..=320).contains(&moved), "{moved} of 1024 moved");
    }

    #[test]
    fn placement_ignores_the_order_nodes_are_listed_in() {
        for s in 0..SHARDS {
            assert_eq!(placement(s, &["a", "b", "c"]), placement(s, &["c", "a", "b"]));
        }
        assert_eq!(placement(7, &[]), None);
    }

    #[test]
    fn node_ids_are_subject_tokens() {
        assert!(valid_node_id("n1"));
        assert!(valid_node_id("node_A-7"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a.b"));
        assert!(!valid_node_id("a b"));
        assert!(!valid_node_id("*"));
        assert!(!valid_node_id(&"x".repeat(65)));
        assert!(node_lock_key("n1") >= 0);
    }
}
