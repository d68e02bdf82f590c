use std::sync::Arc;

use cowfs::device::{BlockDevice, MemoryDevice};
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Filesystem, MkfsOptions, OpenOptions};

#[test]
fn write_commit_reopen_read() {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(64 << 20));
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    eprintln!(
        "{:?}",
        cowfs::scan_superblocks(dev.as_ref()).best().unwrap()
    );
    let fs = Filesystem::open(dev.clone(), &OpenOptions::default()).unwrap();
    let root = fs.root();
    let f = fs
        .create(root, b"a", FileKind::Regular, CreateAttrs::with_mode(0o644))
        .unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    fs.write(f, 10, &data).unwrap();
    let mut back = vec![0; data.len()];
    assert_eq!(fs.read(f, 10, &mut back).unwrap(), data.len());
    assert_eq!(back, data);
    fs.sync().unwrap();
    eprintln!("{:?}", fs.info().unwrap());
    fs.unmount().unwrap();
    let fs = Filesystem::open(dev.clone(), &OpenOptions::default()).unwrap();
    let f = fs.resolve("/a").unwrap();
    let mut back = vec![0; data.len()];
    assert_eq!(fs.read(f, 10, &mut back).unwrap(), data.len());
    assert_eq!(back, data);
    assert_eq!(fs.getattr(f).unwrap().size, 100_010);
}
