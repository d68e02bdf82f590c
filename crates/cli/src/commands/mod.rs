//! The commands, one module per concern; each command's arguments are declared beside the
//! code that runs it.

pub mod attrs;
pub mod demo;
pub mod files;
pub mod image;
pub mod io;
pub mod kswap;
pub mod maint;
pub mod memload;
pub mod mount;
pub mod share;
pub mod subvol;
pub mod swapfile;
