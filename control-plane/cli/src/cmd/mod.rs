//! One module per subcommand.

pub mod admin;
pub mod ca;
pub mod check;
pub mod inject;
pub mod install;
pub mod token;
pub mod translate;
