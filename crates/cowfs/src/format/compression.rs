//! How data is encoded on disk (docs/FORMAT.md 4.5), and the compression choices that say
//! how new data is: the filesystem's (in `fs_state`) and a file's own (in its inode).

use crate::error::{Error, Result};

/// How an extent's bytes are encoded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    /// One zstd frame.
    Zstd = 1,
    /// One LZ4 block after its length (a u32).
    Lz4 = 2,
}

impl Compression {
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            2 => Ok(Compression::Lz4),
            c => Err(Error::corrupt(format!("compression {c} unknown"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        }
    }
}

/// The most file data one compressed extent holds (its `ram_len`).
pub const MAX_COMPRESSED_LEN: u64 = 128 << 10;

/// zstd's level when none is given.
pub const DEFAULT_LEVEL: i32 = 3;

/// A compression choice: `zstd`, `zstd:LEVEL` (1 to 19) or `lz4` (no levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionConfig {
    pub algorithm: Compression,
    /// zstd's level; 0 for lz4.
    pub level: i32,
}

impl CompressionConfig {
    pub const ZSTD: CompressionConfig = CompressionConfig {
        algorithm: Compression::Zstd,
        level: DEFAULT_LEVEL,
    };

    /// Parses `none`, `zstd`, `zstd:LEVEL` or `lz4`.
    pub fn parse(text: &str) -> Result<Option<Self>> {
        let (name, level) = text
            .split_once(':')
            .map_or((text, None), |(n, l)| (n, Some(l)));
        match (name, level) {
            ("none" | "no", None) => Ok(None),
            ("lz4", None) => Ok(Some(CompressionConfig {
                algorithm: Compression::Lz4,
                level: 0,
            })),
            ("zstd", level) => {
                let level = level.map_or(Ok(DEFAULT_LEVEL), |l| {
                    l.parse::<i32>()
                        .ok()
                        .filter(|l| (1..=19).contains(l))
                        .ok_or_else(|| Error::invalid(format!("zstd level {l:?} is not 1 to 19")))
                })?;
                Ok(Some(CompressionConfig {
                    algorithm: Compression::Zstd,
                    level,
                }))
            }
            _ => Err(Error::invalid(format!(
                "unknown compression {text:?} (try zstd, zstd:5 or lz4)"
            ))),
        }
    }

    /// Its two bytes on disk: the algorithm's code and the level (an i8); zeros for none.
    pub fn encode(config: Option<Self>) -> [u8; 2] {
        config.map_or([0, 0], |c| [c.algorithm as u8, c.level as i8 as u8])
    }

    pub fn decode([code, level]: [u8; 2]) -> Result<Option<Self>> {
        let algorithm = Compression::from_code(code)?;
        let config = CompressionConfig {
            algorithm,
            level: level as i8 as i32,
        };
        match algorithm {
            Compression::None => Ok(None),
            Compression::Lz4 if config.level != 0 => {
                Err(Error::corrupt(format!("lz4 with level {}", config.level)))
            }
            Compression::Zstd if !(1..=19).contains(&config.level) => Err(Error::corrupt(format!(
                "zstd level {} out of range",
                config.level
            ))),
            _ => Ok(Some(config)),
        }
    }
}

impl std::fmt::Display for CompressionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.algorithm {
            Compression::Zstd => write!(f, "zstd:{}", self.level),
            other => f.write_str(other.name()),
        }
    }
}
