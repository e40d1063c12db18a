//! enricher: a qrun handler that adds attributes to each message and
//! publishes it onward (Rust SDK).
//!
//! Each message must carry a `customer` attribute. The enricher looks up the
//! customer's tier in config (`tier.<customer>`, else `default_tier`, else
//! "standard") and publishes the body unchanged to the queue named by config
//! `forward_to`, with the original attributes plus `tier`, `enriched_at`
//! (Unix milliseconds) and `enriched_by`. A message without a customer can
//! never be enriched, so it is dead-lettered; a failed publish is nacked and
//! retried, except a message too large for the target queue, which no retry
//! can fix.

use std::cell::RefCell;
use std::time::UNIX_EPOCH;

use qrun::{Error, Message, Verdict};

struct Config {
    forward_to: String,
    default_tier: String,
}

thread_local! {
    // Read once per instance in init: config does not change during its life.
    static CONFIG: RefCell<Option<Config>> = RefCell::new(None);
}

fn init() -> Result<(), String> {
    let forward_to =
        qrun::config("forward_to").ok_or("config forward_to is not set: nowhere to publish")?;
    let default_tier = qrun::config("default_tier").unwrap_or_else(|| "standard".to_string());
    CONFIG.with(|c| {
        *c.borrow_mut() = Some(Config {
            forward_to,
            default_tier,
        })
    });
    Ok(())
}

fn handle(m: &Message) -> Verdict {
    let customer = match m.attr("customer") {
        Some(c) if !c.is_empty() => c,
        _ => {
            qrun::error("dead-letter: no customer attribute");
            return Verdict::DeadLetter;
        }
    };
    CONFIG.with(|c| {
        let c = c.borrow();
        let c = c.as_ref().expect("init ran");
        // Per-customer tiers are config lookups, not a table loaded in init,
        // because config has no way to list keys and tiers may be many.
        let tier =
            qrun::config(&format!("tier.{}", customer)).unwrap_or_else(|| c.default_tier.clone());
        let at = qrun::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);

        let mut attrs = m.attrs();
        attrs.retain(|(k, _)| k != "tier" && k != "enriched_at" && k != "enriched_by");
        attrs.push(("tier".to_string(), tier.clone()));
        attrs.push(("enriched_at".to_string(), at.to_string()));
        attrs.push(("enriched_by".to_string(), "enricher-rust".to_string()));

        match qrun::publish(&c.forward_to, m.body, &attrs) {
            Ok(()) => {
                qrun::debug(&format!("customer {} is {}", customer, tier));
                Verdict::Ack
            }
            Err(Error::TooLarge) => {
                qrun::error("dead-letter: too large for the next queue");
                Verdict::DeadLetter
            }
            Err(e) => {
                qrun::warn(&format!("publish to {}: {}", c.forward_to, e));
                Verdict::Nack
            }
        }
    })
}

qrun::handler!(handle, init = init);
