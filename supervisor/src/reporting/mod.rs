//! Showing a run: progress from the agent files, the live display, `status`,
//! report.json, the HTML page and its timeline.

pub mod batch_feed;
pub mod batches;
pub mod cache_hits;
pub mod cost;
pub mod estimate;
pub mod failure_feed;
pub mod failures;
pub mod file_watch;
pub mod html;
pub mod pipeline_page;
pub mod progress;
pub mod report;
pub mod sample;
pub mod status;
pub mod timeline;
pub mod view;
