//! Types shared by the XDP program and the control plane, and the pure packet math both use.
//!
//! Everything here is `no_std` and allocation-free so that `lb-ebpf` can call it from the
//! kernel; the host runs the same code in its unit tests.
//!
//! Byte order: every address and port stored in a map type is in **network byte order**, kept
//! exactly as the bytes appear on the wire: an IPv4 address is `u32::from_ne_bytes(octets)` and
//! a port is `u16::from_ne_bytes(wire_bytes)`. Use [`ip_to_map`], [`ip_from_map`],
//! [`port_to_map`] and [`port_from_map`] to convert.
#![no_std]

pub mod agent;
pub mod csum;
pub mod hash;
pub mod maglev;
pub mod maps;
pub mod nat;
pub mod reason;
pub mod tcp;

pub use maps::*;

/// Converts IPv4 octets into the map representation (network byte order).
#[inline(always)]
pub const fn ip_to_map(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// Converts the map representation of an IPv4 address back into octets.
#[inline(always)]
pub const fn ip_from_map(addr: u32) -> [u8; 4] {
    addr.to_ne_bytes()
}

/// Converts a host-order port number into the map representation (network byte order).
#[inline(always)]
pub const fn port_to_map(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
}

/// Converts the map representation of a port back into a host-order port number.
#[inline(always)]
pub const fn port_from_map(port: u16) -> u16 {
    u16::from_be_bytes(port.to_ne_bytes())
}
