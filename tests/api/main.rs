//! Black-box tests: a real server on 127.0.0.1:0, real HTTP and WebSocket clients.
//! One test binary (faster to link); one module per area.

mod common;

mod health;
