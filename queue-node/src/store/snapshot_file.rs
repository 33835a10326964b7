//! Snapshots as files, streamed both ways: a shard's records go from a
//! RocksDB snapshot into a file record by record (which openraft then
//! sends to followers chunk by chunk), and from a received file into
//! RocksDB in bounded write batches. Neither side ever holds a shard's
//! records in memory, so a snapshot of fifty million jobs costs what one
//! write batch does.
//!
//! Layout (snapshot format 3): [`MAGIC`], the format (u32 LE), the shard's
//! clock (u64 LE), then per record the key and the value, each as a u32 LE
//! length and its bytes; then [`END`], the record count (u64 LE) and an
//! FNV-1a hash of every record's bytes (u64 LE), so a cut-short or damaged
//! file is refused before anything is written. Snapshots of formats 1 and
//! 2 (one postcard message, from nodes not yet upgraded) are read whole.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::format::{self, SNAPSHOT_FORMAT};

pub const MAGIC: &[u8; 8] = b"RAFTQSNP";
const END: u32 = u32::MAX;
/// Longest key or value a record may have (a job record is at most a few
/// MiB); a longer length is damage, not a record to allocate for.
const MAX_FIELD: u32 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("snapshot file {path} is damaged: {why}")]
    Damaged { path: String, why: String },
    #[error("snapshot file {path} is in snapshot format {format}; this queue-node reads up to {SNAPSHOT_FORMAT}: upgrade this node")]
    Newer { path: String, format: u32 },
}

impl SnapshotFileError {
    pub fn io(path: &Path, source: std::io::Error) -> SnapshotFileError {
        SnapshotFileError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// FNV-1a, 64 bits: no dependency, and ample against torn or flipped
/// bytes (this is not a defence against an attacker; the peer link is).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Writes a snapshot file record by record.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    path: PathBuf,
    count: u64,
    hash: Fnv,
}

impl SnapshotWriter {
    pub fn create(path: &Path, now_ms: u64) -> Result<SnapshotWriter, SnapshotFileError> {
        let file = File::create(path).map_err(|e| SnapshotFileError::io(path, e))?;
        let mut writer = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            count: 0,
            hash: Fnv::new(),
        };
        writer.write(MAGIC)?;
        writer.write(&SNAPSHOT_FORMAT.to_le_bytes())?;
        writer.write(&now_ms.to_le_bytes())?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SnapshotFileError> {
        self.out
            .write_all(bytes)
            .map_err(|e| SnapshotFileError::io(&self.path, e))
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotFileError> {
        for field in [key, value] {
            let len = u32::try_from(field.len())
                .ok()
                .filter(|&n| n <= MAX_FIELD)
                .ok_or_else(|| SnapshotFileError::Damaged {
                    path: self.path.display().to_string(),
                    why: format!("a record field of {} bytes is too long", field.len()),
                })?;
            self.write(&len.to_le_bytes())?;
            self.write(field)?;
            self.hash.update(field);
        }
        self.count += 1;
        Ok(())
    }

    /// Ends the file and syncs it to disk.
    pub fn finish(mut self) -> Result<u64, SnapshotFileError> {
        self.write(&END.to_le_bytes())?;
        self.write(&self.count.to_le_bytes())?;
        self.write(&self.hash.0.to_le_bytes())?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| SnapshotFileError::io(&self.path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| SnapshotFileError::io(&self.path, e))?;
        Ok(self.count)
    }
}

/// One key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Reads a snapshot file's records in order, checking its end.
pub struct SnapshotReader {
    pub now_ms: u64,
    records: Records,
}

enum Records {
    Streamed {
        input: BufReader<File>,
        path: PathBuf,
        count: u64,
        hash: Fnv,
        done: bool,
    },
    /// Formats 1 and 2, decoded whole.
    Legacy(std::vec::IntoIter<Record>),
}

impl SnapshotReader {
    pub fn open(path: &Path) -> Result<SnapshotReader, SnapshotFileError> {
        let mut input = BufReader::with_capacity(
            1 << 20,
            File::open(path).map_err(|e| SnapshotFileError::io(path, e))?,
        );
        let mut magic = [0u8; 8];
        let streamed = match input.read_exact(&mut magic) {
            Ok(()) => &magic == MAGIC,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(SnapshotFileError::io(path, e)),
        };
        if !streamed {
            let mut data = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(|e| SnapshotFileError::io(path, e))?;
            let payload = format::decode_snapshot(&data).map_err(|e| damaged(path, e))?;
            return Ok(SnapshotReader {
                now_ms: payload.now_ms,
                records: Records::Legacy(
                    payload
                        .records
                        .into_iter()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect::<Vec<_>>()
                        .into_iter(),
                ),
            });
        }
        let format = read_u32(&mut input, path)?;
        if format > SNAPSHOT_FORMAT {
            return Err(SnapshotFileError::Newer {
                path: path.display().to_string(),
                format,
            });
        }
        let now_ms = read_u64(&mut input, path)?;
        Ok(SnapshotReader {
            now_ms,
            records: Records::Streamed {
                input,
                path: path.to_path_buf(),
                count: 0,
                hash: Fnv::new(),
                done: false,
            },
        })
    }

    /// Reads the whole file once without keeping anything: whether it is
    /// complete and undamaged. Returns the shard clock it carries.
    pub fn verify(path: &Path) -> Result<u64, SnapshotFileError> {
        let mut reader = SnapshotReader::open(path)?;
        for record in &mut reader {
            record?;
        }
        Ok(reader.now_ms)
    }
}

impl Iterator for SnapshotReader {
    type Item = Result<Record, SnapshotFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.records {
            Records::Legacy(records) => records.next().map(Ok),
            Records::Streamed {
                input,
                path,
                count,
                hash,
                done,
            } => {
                if *done {
                    return None;
                }
                let result = (|| {
                    let key_len = read_u32(input, path)?;
                    if key_len == END {
                        let (want_count, want_hash) =
                            (read_u64(input, path)?, read_u64(input, path)?);
                        if want_count != *count || want_hash != hash.0 {
                            return Err(SnapshotFileError::Damaged {
                                path: path.display().to_string(),
                                why: format!(
                                    "it ends after {count} records but says {want_count}, or its hash differs"
                                ),
                            });
                        }
                        return Ok(None);
                    }
                    let key = read_field(input, path, key_len)?;
                    let value_len = read_u32(input, path)?;
                    let value = read_field(input, path, value_len)?;
                    hash.update(&key);
                    hash.update(&value);
                    *count += 1;
                    Ok(Some((key, value)))
                })();
                match result {
                    Ok(Some(record)) => Some(Ok(record)),
                    Ok(None) => {
                        *done = true;
                        None
                    }
                    Err(e) => {
                        *done = true;
                        Some(Err(e))
                    }
                }
            }
        }
    }
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> SnapshotFileError {
    SnapshotFileError::Damaged {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

fn read_exact(input: &mut impl Read, path: &Path, buf: &mut [u8]) -> Result<(), SnapshotFileError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => damaged(path, "it is cut short"),
        _ => SnapshotFileError::io(path, e),
    })
}

fn read_u32(input: &mut impl Read, path: &Path) -> Result<u32, SnapshotFileError> {
    let mut buf = [0u8; 4];
    read_exact(input, path, &mut buf)?;
    Ok(u32::from_le_bytes(buf))
}

fn read_u64(input: &mut impl Read, path: &Path) -> Result<u64, SnapshotFileError> {
    let mut buf = [0u8; 8];
    read_exact(input, path, &mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

fn read_field(input: &mut impl Read, path: &Path, len: u32) -> Result<Vec<u8>, SnapshotFileError> {
    if len > MAX_FIELD {
        return Err(damaged(path, format!("a record field claims {len} bytes")));
    }
    let mut field = vec![0u8; len as usize];
    read_exact(input, path, &mut field)?;
    Ok(field)
}

/// The snapshot data openraft moves around: an open file and its path
/// (so a received snapshot can be installed, and kept, from where it
/// landed).
pub struct SnapshotData {
    pub path: PathBuf,
    file: tokio::fs::File,
}

impl SnapshotData {
    pub async fn create(path: PathBuf) -> std::io::Result<SnapshotData> {
        let file = tokio::fs::File::create(&path).await?;
        Ok(SnapshotData { path, file })
    }

    pub async fn open(path: PathBuf) -> std::io::Result<SnapshotData> {
        let file = tokio::fs::File::open(&path).await?;
        Ok(SnapshotData { path, file })
    }
}

impl tokio::io::AsyncRead for SnapshotData {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SnapshotData {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl tokio::io::AsyncSeek for SnapshotData {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, records: &[(&[u8], &[u8])]) {
        let mut writer = SnapshotWriter::create(path, 1234).expect("create");
        for (k, v) in records {
            writer.push(k, v).expect("push");
        }
        assert_eq!(writer.finish().expect("finish"), records.len() as u64);
    }

    #[test]
    fn records_stream_back_in_order_with_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let records: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b""), (b"c", &[7u8; 5000])];
        write(&path, &records);
        let reader = SnapshotReader::open(&path).expect("open");
        assert_eq!(reader.now_ms, 1234);
        let back: Vec<Record> = reader.map(|r| r.expect("record")).collect();
        let want: Vec<Record> = records
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(back, want);
        assert_eq!(SnapshotReader::verify(&path).expect("verifies"), 1234);
    }

    #[test]
    fn a_cut_short_or_altered_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write(&path, &[(b"key", b"value"), (b"key2", b"value2")]);
        let whole = std::fs::read(&path).unwrap();
        for cut in [whole.len() - 1, whole.len() - 20, 30] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let err = SnapshotReader::verify(&path).expect_err("cut short");
            assert!(err.to_string().contains("damaged"), "{err}");
        }
        let mut flipped = whole.clone();
        let at = flipped.len() - 25;
        flipped[at] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(SnapshotReader::verify(&path).is_err());
        let mut newer = whole;
        newer[8..12].copy_from_slice(&(SNAPSHOT_FORMAT + 1).to_le_bytes());
        std::fs::write(&path, &newer).unwrap();
        let err = SnapshotReader::verify(&path).expect_err("newer");
        assert!(err.to_string().contains("upgrade this node"), "{err}");
    }

    #[test]
    fn a_format_2_snapshot_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let payload = format::SnapshotPayload {
            now_ms: 99,
            records: vec![(
                bytes::Bytes::from_static(b"k"),
                bytes::Bytes::from_static(b"v"),
            )],
            format: 2,
        };
        std::fs::write(&path, postcard::to_allocvec(&payload).unwrap()).unwrap();
        let reader = SnapshotReader::open(&path).expect("open");
        assert_eq!(reader.now_ms, 99);
        let back: Vec<Record> = reader.map(|r| r.expect("record")).collect();
        assert_eq!(back, vec![(b"k".to_vec(), b"v".to_vec())]);
    }
}
