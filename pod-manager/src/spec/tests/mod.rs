//! Table tests of the translations that assemble several concepts (sandbox and
//! container configs, env, resources, security contexts). Single-concept files
//! (quantity, expansion, dns) keep their tests beside the code.

mod container;
mod env;
mod fixtures;
mod resources;
mod sandbox;
mod security;
