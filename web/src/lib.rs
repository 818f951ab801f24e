//! Web portal (upload, jobs, player, verify) and admin dashboard of the voxproof platform.
