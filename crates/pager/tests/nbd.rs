//! The pager with its swap area across an NBD connection (nbdkit on a Unix socket the test
//! owns): a raw export as the area (remote memory: `nbdkit memory`), and a cowfs swap file
//! through the filesystem on an image on an export. Every byte is checked; a server that dies
//! under the pager makes the next swap-in SIGBUS, never wrong data.

mod common;
#[path = "../../../tests/support/nbd_server.rs"]
mod nbd_server;

use std::path::Path;

use common::*;
use nbd_server::NbdServer;
use pager::{Pager, PagerConfig};
use swap::{DeviceArea, SwapSystem};

/// A swap system over a whole export of `server`, made a swap area here.
fn export_area(server: &NbdServer) -> SwapSystem {
    let uri = server.uri();
    swap::mkswap(Path::new(&uri), None, "", [4; 16]).unwrap();
    let mut system = SwapSystem::new();
    system
        .swapon(Box::new(DeviceArea::new(Path::new(&uri))), None)
        .unwrap();
    system
}

#[test]
fn a_swap_area_on_an_export_round_trips() {
    let Some(server) = NbdServer::memory("32M") else {
        return;
    };
    let config = PagerConfig::with_budget(2 * MIB as u64);
    let Some(pager) = pager_or_skip(config, export_area(&server)) else {
        return;
    };
    round_trip(&pager, 21);
    let swaps = pager.swaps();
    assert!(
        swaps.contains("nbd+unix:///?socket=") && swaps.contains("partition"),
        "{swaps}"
    );
}

#[test]
fn a_through_fs_swap_file_on_an_image_on_an_export_round_trips() {
    let Some(server) = NbdServer::memory("192M") else {
        return;
    };
    let dev = cowfs::device::open(server.uri().as_ref(), cowfs::device::Access::ReadWrite).unwrap();
    let (fs, _, system) = through_fs_swap(dev.clone(), 32 * MIB);
    let config = PagerConfig::with_budget(2 * MIB as u64);
    let Some(pager) = pager_or_skip(config, system) else {
        return;
    };
    round_trip(&pager, 22);
    drop(pager);
    fs.unmount().unwrap();
    let report = cowfs::fsck::check(dev, &mut |_, _| {});
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn a_server_dying_under_the_pager_is_sigbus() {
    dies_of_sigbus("a_server_dying_under_the_pager_is_sigbus", || {
        let mut server = NbdServer::memory("32M").expect("nbdkit");
        let pager = Pager::new(PagerConfig::with_budget(MIB as u64), export_area(&server)).unwrap();
        let mut region = pager.region(8 * MIB).unwrap();
        fill(region.as_mut_slice(), 23);
        server.kill();
        // Page 0 was swapped out long ago; its swap-in finds the connection gone.
        std::hint::black_box(region.as_slice()[0]);
    });
}
