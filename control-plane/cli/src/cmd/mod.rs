//! One module per subcommand.

pub mod admin;
pub mod ca;
pub mod inject;
pub mod token;
pub mod translate;
