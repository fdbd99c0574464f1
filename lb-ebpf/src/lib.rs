//! Empty library target: it lets lb-user list lb-ebpf as a build-dependency, so cargo rebuilds
//! the eBPF object when this crate changes. The program itself is `src/main.rs`.
#![no_std]
