//! hyp's guest loader.
#![no_std]
