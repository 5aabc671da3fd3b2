//! A [`ByteSource`] over a native file, read with positioned reads (`pread` on unix,
//! `ReadFile` with an offset on windows).
//!
//! Unlike a memory map, every read copies exactly the requested bytes into a fresh buffer and
//! touches nothing else, and one shared handle serves concurrent readers without a seek
//! position to guard. That is what streaming one expert record at a time wants: a record is
//! read, copied to the GPU and dropped, with no page-cache mapping growing behind it.

use std::borrow::Cow;
use std::fs::File;
use std::path::Path;

use super::ByteSource;
use crate::error::WeightsError;

/// A file read by offset. Its length is taken when it is opened.
pub struct FileSource {
    path: String,
    file: File,
    len: u64,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let io = |source| WeightsError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(Self {
            path: path.display().to_string(),
            file,
            len,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// One positioned read; may return fewer bytes than asked (0 at the end of the file).
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

/// One positioned read. Windows' `seek_read` also moves the handle's cursor, which nothing
/// here relies on.
#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, WeightsError> {
        let mut buf = vec![0u8; len];
        self.read_into(offset, &mut buf)?;
        Ok(Cow::Owned(buf))
    }

    fn read_into(&self, offset: u64, out: &mut [u8]) -> Result<(), WeightsError> {
        let len = out.len();
        let past_end = |got: usize| WeightsError::Format {
            path: self.path.clone(),
            reason: format!("read of {len} bytes at {offset} ends after {got} bytes, past the end of the file (truncated?)"),
        };
        if offset.checked_add(len as u64).is_none_or(|end| end > self.len) {
            return Err(past_end(0));
        }
        let mut got = 0;
        // A positioned read may stop short (signals, network file systems): loop until full.
        while got < len {
            match read_at(&self.file, &mut out[got..], offset + got as u64) {
                Ok(0) => return Err(past_end(got)),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(WeightsError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_and_refuses_past_the_end() {
        let path = std::env::temp_dir().join(format!("minimax-file-source-{}", std::process::id()));
        std::fs::write(&path, (0..=255u8).collect::<Vec<_>>()).unwrap();
        let source = FileSource::open(&path).unwrap();
        assert_eq!(source.len(), 256);
        assert_eq!(&*source.read(10, 3).unwrap(), &[10, 11, 12]);
        assert_eq!(source.read(256, 0).unwrap().len(), 0);
        let err = source.read(250, 10).unwrap_err().to_string();
        assert!(err.contains("past the end") && err.contains("at 250"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
