//! hyp: the EL2 binary.
#![no_std]
#![no_main]
