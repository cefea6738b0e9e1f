//! Looking at the local PostgreSQL: facts only, no decisions and no state. What the facts
//! mean for the engine (with what the agent remembers) is `crate::runtime::PgRuntime::record`.

use crate::world::PgControl;
use pgherd_postgres::{ControlData, DataDirState, PgState};
use std::time::Duration;

/// The status query must not stall a cycle: a server that does not answer in time counts as
/// "running but not accepting connections".
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// PostgreSQL as found this cycle.
#[derive(Debug, Clone)]
pub struct Facts {
    pub data_dir: DataDirState,
    /// The postmaster is alive.
    pub running: bool,
    /// Its answer to the status query, when running and answering in time.
    pub state: Option<PgState>,
    /// `pg_controldata`, when stopped with an initialized data directory.
    pub control: Option<ControlData>,
}

pub async fn look(pg: &dyn PgControl) -> Facts {
    let data_dir = pg.data_dir_state();
    let running = pg.postmaster().is_some();
    let state = if running {
        tokio::time::timeout(QUERY_TIMEOUT, pg.query_state())
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    let control = if !running && matches!(data_dir, DataDirState::Initialized { .. }) {
        pg.controldata().await.ok()
    } else {
        None
    };
    Facts {
        data_dir,
        running,
        state,
        control,
    }
}
