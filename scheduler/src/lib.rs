//! Job model and state machine, Postgres repository and Redis queue of the voxproof
//! platform: fan-out of a long document into segments, fan-in, retries.
