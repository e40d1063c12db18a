//! __NAME__: a qrun message handler written with the Rust SDK.
//!
//! It greets each message in the log and, when config "forward_to" names a
//! queue, publishes the body there with attribute greeted_by=__NAME__. An
//! empty body is dead-lettered: no retry can give it content.

use std::cell::RefCell;

use qrun::{Message, Verdict};

thread_local! {
    // Read once per instance: config does not change during its life.
    static FORWARD_TO: RefCell<Option<String>> = RefCell::new(None);
}

fn init() -> Result<(), String> {
    FORWARD_TO.with(|f| *f.borrow_mut() = qrun::config("forward_to"));
    Ok(())
}

fn handle(m: &Message) -> Verdict {
    if m.body.is_empty() {
        qrun::warn("empty body: nothing to greet");
        return Verdict::DeadLetter;
    }
    qrun::info(&format!("hello, {}", String::from_utf8_lossy(m.body)));
    FORWARD_TO.with(|f| match &*f.borrow() {
        Some(queue) => match qrun::publish(queue, m.body, &[("greeted_by", "__NAME__")]) {
            Ok(()) => Verdict::Ack,
            Err(e) => {
                qrun::warn(&format!("forward: {}", e));
                Verdict::Nack // retried with backoff
            }
        },
        None => Verdict::Ack,
    })
}

qrun::handler!(handle, init = init);
