//! HTTP API of the voxproof platform: jobs, voices, verification, keys and webhooks, with
//! OpenAPI. Built on the synthesis engine in `workers/`.
