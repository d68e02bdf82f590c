//! chattr/lsattr as e2fsprogs spells them: flag letters, their column order in `lsattr`
//! output, and `+`/`-`/`=` change specs.

use cowfs::format::inode_flags;

/// lsattr's columns, in e2fsprogs order, with the FS_IOC_GETFLAGS bit of each letter.
const COLUMNS: [(char, u64); 22] = [
    ('s', 0x1),
    ('u', 0x2),
    ('S', inode_flags::SYNC),
    ('D', inode_flags::DIRSYNC),
    ('i', inode_flags::IMMUTABLE),
    ('a', inode_flags::APPEND),
    ('d', inode_flags::NODUMP),
    ('A', inode_flags::NOATIME),
    ('c', inode_flags::COMPRESS),
    ('E', 0x800),
    ('j', 0x4000),
    ('I', 0x1000),
    ('t', 0x8000),
    ('T', 0x20000),
    ('e', 0x80000),
    ('C', inode_flags::NOCOW),
    ('x', 0x0200_0000),
    ('F', 0x4000_0000),
    ('N', 0x1000_0000),
    ('P', 0x2000_0000),
    ('V', 0x0010_0000),
    ('m', inode_flags::NOCOMPRESS),
];

/// The flags as lsattr prints them: one column per letter, `-` where unset.
pub fn lsattr_string(flags: u64) -> String {
    COLUMNS
        .iter()
        .map(|(c, bit)| if flags & bit != 0 { *c } else { '-' })
        .collect()
}

/// Applies chattr specs (`+C`, `-ia`, `=c`) to `flags`.
pub fn apply_specs(specs: &[String], mut flags: u64) -> Result<u64, String> {
    if specs.is_empty() {
        return Err("no change given (e.g. +C, -i, =c)".into());
    }
    for spec in specs {
        let mut chars = spec.chars();
        let op = chars.next().ok_or("empty change")?;
        let mut bits = 0u64;
        for letter in chars {
            let (_, bit) = COLUMNS
                .iter()
                .find(|(c, _)| *c == letter)
                .ok_or_else(|| format!("unknown attribute {letter:?} in {spec:?}"))?;
            bits |= bit;
        }
        flags = match op {
            '+' => flags | bits,
            '-' => flags & !bits,
            '=' => bits,
            _ => return Err(format!("{spec:?}: a change starts with +, - or =")),
        };
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_specs() {
        assert_eq!(lsattr_string(inode_flags::NOCOW), "---------------C------");
        assert_eq!(
            lsattr_string(inode_flags::IMMUTABLE | inode_flags::COMPRESS),
            "----i---c-------------"
        );
        let specs = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            apply_specs(&specs(&["+Ci"]), 0),
            Ok(inode_flags::NOCOW | inode_flags::IMMUTABLE)
        );
        assert_eq!(
            apply_specs(&specs(&["+C", "-C", "+a"]), 0),
            Ok(inode_flags::APPEND)
        );
        assert_eq!(
            apply_specs(&specs(&["=c"]), inode_flags::NOCOW),
            Ok(inode_flags::COMPRESS)
        );
        assert!(apply_specs(&specs(&["+Z"]), 0).is_err());
        assert!(apply_specs(&specs(&["C"]), 0).is_err());
    }
}
