//! One module per subcommand.

pub mod translate;
