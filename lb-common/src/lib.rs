//! Types shared by the XDP program and the control plane, and the pure packet math both use.
#![no_std]
