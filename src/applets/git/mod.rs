//! `git-shallow`: check out one commit of a remote repository, as `git clone --depth 1` would,
//! without git in the image.

pub mod checkout;
pub mod delta;
pub mod pack;
pub mod pktline;
pub mod protocol;
