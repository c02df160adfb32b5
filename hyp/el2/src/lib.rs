//! hyp's EL2 layer.
#![no_std]
