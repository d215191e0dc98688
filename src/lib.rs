//! leadorch
