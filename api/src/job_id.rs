//! Job ids. A job's id is derived from where its enqueue landed in the Raft
//! log: (shard, log index, position in the entry). That makes ids unique
//! cluster-wide and identical on every replica without any coordination.
//! The text form is `"{shard}-{index}-{position}"`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct JobId {
    pub shard: u32,
    pub index: u64,
    pub position: u32,
}

impl JobId {
    /// Big-endian bytes: sorts like the id itself, so RocksDB keys and
    /// in-memory orders agree.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&self.shard.to_be_bytes());
        out[4..12].copy_from_slice(&self.index.to_be_bytes());
        out[12..].copy_from_slice(&self.position.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<JobId> {
        if bytes.len() != 16 {
            return None;
        }
        Some(JobId {
            shard: u32::from_be_bytes(bytes[..4].try_into().ok()?),
            index: u64::from_be_bytes(bytes[4..12].try_into().ok()?),
            position: u32::from_be_bytes(bytes[12..].try_into().ok()?),
        })
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand: ids are formatted for every job enqueued and
        // delivered, and the generic integer formatting showed in profiles.
        let mut buf = [0u8; 42]; // u32 "-" u64 "-" u32 at their longest
        let mut end = buf.len();
        for (i, n) in [self.position as u64, self.index, self.shard as u64]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                end -= 1;
                buf[end] = b'-';
            }
            let mut n = n;
            loop {
                end -= 1;
                buf[end] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
        }
        // Only ASCII digits and dashes were written.
        f.write_str(std::str::from_utf8(&buf[end..]).map_err(|_| fmt::Error)?)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed job id {0:?}: expected \"<shard>-<index>-<position>\", e.g. \"0-42-3\"")]
pub struct ParseJobIdError(pub String);

impl FromStr for JobId {
    type Err = ParseJobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseJobIdError(s.chars().take(64).collect());
        let mut parts = s.split('-');
        let mut next = || parts.next().ok_or_else(err);
        let shard = next()?.parse().map_err(|_| err())?;
        let index = next()?.parse().map_err(|_| err())?;
        let position = next()?.parse().map_err(|_| err())?;
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(JobId {
            shard,
            index,
            position,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_bytes_round_trip() {
        let id = JobId {
            shard: 3,
            index: 1 << 40,
            position: 17,
        };
        assert_eq!(id.to_string(), "3-1099511627776-17");
        let extremes = JobId {
            shard: u32::MAX,
            index: u64::MAX,
            position: 0,
        };
        assert_eq!(extremes.to_string(), "4294967295-18446744073709551615-0");
        assert_eq!(extremes.to_string().parse::<JobId>(), Ok(extremes));
        assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        assert_eq!(JobId::from_bytes(&id.to_bytes()), Some(id));
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in ["", "1", "1-2", "1-2-3-4", "a-b-c", "-1-2-3", "1--2"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn byte_order_matches_id_order() {
        let a = JobId {
            shard: 0,
            index: 255,
            position: 9,
        };
        let b = JobId {
            shard: 0,
            index: 256,
            position: 0,
        };
        assert!(a < b);
        assert!(a.to_bytes() < b.to_bytes());
    }
}
