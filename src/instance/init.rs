//! First start: initialise the data directory, crash-safely and idempotently.

use super::datadir::{DataDir, InitState};
use super::engine::Engine;
use super::error::InstanceError;
use super::reaper::Reaper;
use super::status::Shared;

/// Makes sure the data directory is initialised: keeps an initialised one,
/// initialises an empty one, cleans and redoes an interrupted one. The marker
/// is written last.
pub async fn prepare(shared: &Shared, reaper: &Reaper) -> Result<(), InstanceError> {
    let config = &shared.config;
    let engine: &Engine = &shared.engine;
    let dir = DataDir::new(&config.data_dir);
    dir.ensure()?;
    match dir.state(config.engine, engine.owned_entries())? {
        InitState::Initialised(marker) => {
            tracing::info!(data_dir = %dir.root().display(), initialised_at = %marker.initialised_at,
                "the data directory is initialised; keeping its data");
        }
        InitState::Empty => initialise(&dir, engine, config.engine, reaper).await?,
        InitState::Partial(leftovers) => {
            tracing::warn!(
                ?leftovers,
                "an interrupted initialisation left files; starting over"
            );
            dir.clean(&leftovers)?;
            initialise(&dir, engine, config.engine, reaper).await?;
        }
    }
    shared.update(|s| s.data_dir_initialised = true);
    Ok(())
}

async fn initialise(
    dir: &DataDir,
    engine: &Engine,
    kind: super::config::EngineKind,
    reaper: &Reaper,
) -> Result<(), InstanceError> {
    tracing::info!(data_dir = %dir.root().display(), engine = %kind, "initialising the data directory");
    engine.initialise(reaper).await?;
    engine.render_config()?;
    dir.mark_initialised(kind)?;
    tracing::info!("the data directory is initialised");
    Ok(())
}
