//! One module per subcommand.

pub mod admin;
pub mod token;
pub mod translate;
