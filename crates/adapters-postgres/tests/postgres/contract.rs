//! The store contract suite of `registrar-application`, run on a fresh PostgreSQL database per
//! case: the production store must behave exactly like the memory store.

use crate::helpers::fresh_store;

registrar_application::store_contract_tests!(|| async { fresh_store().await });
