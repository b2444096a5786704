//! Progress bars on stderr for the long commands (perplexity, bench); each
//! is drawn only when stderr is a terminal, so logs and pipes stay clean.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `total` steps, with elapsed time and ETA; `unit` names a step.
pub fn bar(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit}, {{elapsed}} (ETA {{eta}}) {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("the template is well formed"));
    bar
}
