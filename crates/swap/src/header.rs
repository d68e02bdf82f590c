//! The Linux swap header, `SWAPSPACE2` version 1, in the first page of a swap area:
//!
//! ```text
//! offset  size   field
//! 0       1024   boot bits (zero)
//! 1024    4      version (1)
//! 1028    4      last_page: pages in the area - 1 (page 0 is this header)
//! 1032    4      nr_badpages
//! 1036    16     uuid
//! 1052    16     label (at most 15 bytes, NUL-terminated)
//! 1068    468    padding (zero)
//! 1536    4 x n  bad page numbers
//! P - 10  10     "SWAPSPACE2"
//! ```
//!
//! The u32 fields are in the writer's byte order; a reader accepts the swapped order too, as
//! the kernel does. Validation failures carry the kernel's own messages.

use std::fmt;

/// The page size of the areas this crate makes and reads.
pub const PAGE_SIZE: usize = 4096;
pub const MAGIC: &[u8; 10] = b"SWAPSPACE2";
const VERSION_OFFSET: usize = 1024;
const LAST_PAGE_OFFSET: usize = 1028;
const BADPAGES_OFFSET: usize = 1032;
const UUID_OFFSET: usize = 1036;
const LABEL_OFFSET: usize = 1052;
const LABEL_LEN: usize = 16;
const BADPAGE_LIST_OFFSET: usize = 1536;
/// The most bad pages a header can list (what fits before the magic).
pub const MAX_BADPAGES: usize = (PAGE_SIZE - 10 - BADPAGE_LIST_OFFSET) / 4;
/// The smallest area the kernel accepts (header plus two pages).
pub const MIN_PAGES: u64 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapHeader {
    /// Pages in the area, header included (last_page + 1).
    pub pages: u64,
    pub uuid: [u8; 16],
    pub label: String,
    pub bad_pages: Vec<u32>,
}

/// Why a header was refused; the message is the kernel's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    NoSignature,
    Version(u32),
    Empty,
    TooManyBadPages(u32),
    /// The header says more pages than the area holds.
    ShorterThanSignature {
        header: u64,
        available: u64,
    },
    BadPagesOnFile,
    LabelTooLong,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::NoSignature => write!(f, "Unable to find swap-space signature"),
            HeaderError::Version(v) => write!(f, "Unable to handle swap header version {v}"),
            HeaderError::Empty => write!(f, "Empty swap-file"),
            HeaderError::TooManyBadPages(n) => write!(f, "Too many bad pages: {n}"),
            HeaderError::ShorterThanSignature { header, available } => {
                write!(f, "Swap area shorter than signature indicates ({header} pages, {available} available)")
            }
            HeaderError::BadPagesOnFile => write!(f, "Bad pages are not supported on a swap file"),
            HeaderError::LabelTooLong => write!(f, "A swap label is at most 15 bytes"),
        }
    }
}

impl std::error::Error for HeaderError {}

impl From<HeaderError> for cowfs::Error {
    fn from(e: HeaderError) -> Self {
        cowfs::Error::invalid(e.to_string())
    }
}

impl SwapHeader {
    pub fn new(pages: u64, uuid: [u8; 16], label: &str) -> Result<Self, HeaderError> {
        if label.len() >= LABEL_LEN {
            return Err(HeaderError::LabelTooLong);
        }
        if pages < 2 {
            return Err(HeaderError::Empty);
        }
        Ok(SwapHeader {
            pages,
            uuid,
            label: label.to_string(),
            bad_pages: vec![],
        })
    }

    /// Usable swap pages: all but the header page.
    pub fn usable_pages(&self) -> u64 {
        self.pages - 1 - self.bad_pages.len() as u64
    }

    /// The header page, in this machine's byte order.
    pub fn encode(&self) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_SIZE];
        let last_page = u32::try_from(self.pages - 1).unwrap_or(u32::MAX);
        page[VERSION_OFFSET..][..4].copy_from_slice(&1u32.to_ne_bytes());
        page[LAST_PAGE_OFFSET..][..4].copy_from_slice(&last_page.to_ne_bytes());
        page[BADPAGES_OFFSET..][..4].copy_from_slice(&(self.bad_pages.len() as u32).to_ne_bytes());
        page[UUID_OFFSET..][..16].copy_from_slice(&self.uuid);
        page[LABEL_OFFSET..][..self.label.len()].copy_from_slice(self.label.as_bytes());
        for (i, bad) in self.bad_pages.iter().enumerate() {
            page[BADPAGE_LIST_OFFSET + 4 * i..][..4].copy_from_slice(&bad.to_ne_bytes());
        }
        page[PAGE_SIZE - MAGIC.len()..].copy_from_slice(MAGIC);
        page
    }

    /// Reads and validates a header page of an area of `available_pages` pages (`is_file`:
    /// a regular file, which may not list bad pages).
    pub fn decode(page: &[u8], available_pages: u64, is_file: bool) -> Result<Self, HeaderError> {
        if page.len() < PAGE_SIZE || &page[PAGE_SIZE - MAGIC.len()..PAGE_SIZE] != MAGIC {
            return Err(HeaderError::NoSignature);
        }
        let field = |at: usize| u32::from_ne_bytes(page[at..at + 4].try_into().unwrap());
        // The kernel's test for a header written on the other byte order: version 1 swapped.
        let swapped = field(VERSION_OFFSET).swap_bytes() == 1;
        let get = |at: usize| {
            if swapped {
                field(at).swap_bytes()
            } else {
                field(at)
            }
        };
        let version = get(VERSION_OFFSET);
        if version != 1 {
            return Err(HeaderError::Version(version));
        }
        let last_page = get(LAST_PAGE_OFFSET);
        if last_page == 0 {
            return Err(HeaderError::Empty);
        }
        let nr_bad = get(BADPAGES_OFFSET);
        if nr_bad as usize > MAX_BADPAGES {
            return Err(HeaderError::TooManyBadPages(nr_bad));
        }
        if is_file && nr_bad > 0 {
            return Err(HeaderError::BadPagesOnFile);
        }
        let pages = u64::from(last_page) + 1;
        if pages > available_pages {
            return Err(HeaderError::ShorterThanSignature {
                header: pages,
                available: available_pages,
            });
        }
        let label = &page[LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN];
        let label_len = label.iter().position(|b| *b == 0).unwrap_or(LABEL_LEN);
        Ok(SwapHeader {
            pages,
            uuid: page[UUID_OFFSET..UUID_OFFSET + 16].try_into().unwrap(),
            label: String::from_utf8_lossy(&label[..label_len]).into_owned(),
            bad_pages: (0..nr_bad as usize)
                .map(|i| get(BADPAGE_LIST_OFFSET + 4 * i))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let h = SwapHeader::new(2560, [7; 16], "cowswap").unwrap();
        let page = h.encode();
        assert_eq!(&page[PAGE_SIZE - 10..], b"SWAPSPACE2");
        assert_eq!(&page[1028..1032], &2559u32.to_ne_bytes());
        assert_eq!(&page[1052..1059], b"cowswap");
        assert!(page[..1024].iter().all(|b| *b == 0));
        assert_eq!(SwapHeader::decode(&page, 2560, true).unwrap(), h);
        assert_eq!(h.usable_pages(), 2559);
    }

    #[test]
    fn the_other_byte_order_is_read() {
        let mut page = SwapHeader::new(100, [1; 16], "").unwrap().encode();
        for at in [VERSION_OFFSET, LAST_PAGE_OFFSET, BADPAGES_OFFSET] {
            page[at..at + 4].reverse();
        }
        assert_eq!(SwapHeader::decode(&page, 100, true).unwrap().pages, 100);
    }

    #[test]
    fn validation_as_the_kernel() {
        let good = SwapHeader::new(10, [0; 16], "").unwrap().encode();
        let mut bad = good.clone();
        bad[PAGE_SIZE - 1] = b'X';
        assert_eq!(
            SwapHeader::decode(&bad, 10, true),
            Err(HeaderError::NoSignature)
        );
        let mut v2 = good.clone();
        v2[VERSION_OFFSET..][..4].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(
            SwapHeader::decode(&v2, 10, true),
            Err(HeaderError::Version(2))
        );
        let mut empty = good.clone();
        empty[LAST_PAGE_OFFSET..][..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(
            SwapHeader::decode(&empty, 10, true),
            Err(HeaderError::Empty)
        );
        assert!(matches!(
            SwapHeader::decode(&good, 9, true),
            Err(HeaderError::ShorterThanSignature { .. })
        ));
        assert!(
            SwapHeader::decode(&good, 1000, true).is_ok(),
            "a file longer than its header is fine"
        );
        let mut with_bad = good;
        with_bad[BADPAGES_OFFSET..][..4].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(
            SwapHeader::decode(&with_bad, 10, true),
            Err(HeaderError::BadPagesOnFile)
        );
        assert!(SwapHeader::decode(&with_bad, 10, false).is_ok());
        assert_eq!(
            SwapHeader::new(10, [0; 16], "a label too long!").unwrap_err(),
            HeaderError::LabelTooLong
        );
    }
}
