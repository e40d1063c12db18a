//! The Rust module of qrun's ABI conformance suite: the scripted behaviour of
//! plugins/conformance/README.md, written with the Rust SDK.

use std::cell::Cell;
use std::time::Duration;

use qrun::{Message, Verdict};

thread_local! {
    // Lives as long as the instance: the "count" command proves it.
    static COUNT: Cell<u32> = Cell::new(0);
}

fn out(body: &str) -> Verdict {
    let none: &[(&str, &str)] = &[];
    match qrun::publish("out", body.as_bytes(), none) {
        Ok(()) => Verdict::Ack,
        Err(_) => Verdict::Nack,
    }
}

fn or_absent(v: Option<String>) -> String {
    v.unwrap_or_else(|| "<absent>".to_string())
}

/// The script's word for a failed request.
fn err_word(e: qrun::Error) -> &'static str {
    match e {
        qrun::Error::Denied => "denied",
        qrun::Error::TooLarge => "toolarge",
        qrun::Error::Timeout => "timeout",
        qrun::Error::Connect => "connect",
        qrun::Error::Limit => "limit",
        _ => "error",
    }
}

fn http(url: &str) -> Verdict {
    match qrun::Request::new("POST", url).header("X-Guest", "yes").body("ping").send() {
        Err(e) => out(err_word(e)),
        Ok(resp) => match out(&resp.status.to_string()) {
            Verdict::Ack => out(&String::from_utf8_lossy(&resp.body)),
            v => v,
        },
    }
}

fn httpmany(url: &str) -> Verdict {
    let mut n = 0;
    loop {
        match qrun::Request::new("GET", url).send() {
            Ok(_) => n += 1,
            Err(e) => {
                return match out(&n.to_string()) {
                    Verdict::Ack => out(err_word(e)),
                    v => v,
                }
            }
        }
    }
}

fn retry(url: &str) -> Verdict {
    match qrun::Request::new("GET", url).send() {
        Err(_) => Verdict::Nack,
        Ok(resp) if (200..300).contains(&resp.status) => Verdict::Ack,
        Ok(resp) => qrun::retry_later(&resp),
    }
}

fn handle(m: &Message) -> Verdict {
    let body = match std::str::from_utf8(m.body) {
        Ok(s) => s,
        Err(_) => return Verdict::DeadLetter,
    };
    let (cmd, arg) = match body.find(':') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, ""),
    };
    match cmd {
        "verdict" => match arg.parse::<i32>() {
            // Any number, bad verdicts included: they are part of the script.
            Ok(n) => Verdict::Code(n),
            Err(_) => Verdict::DeadLetter,
        },
        "trap" => panic!("trap requested"),
        "echo" => match qrun::publish("out", arg.as_bytes(), &m.attrs()) {
            Ok(()) => Verdict::Ack,
            Err(_) => Verdict::Nack,
        },
        "attr" => out(&or_absent(m.attr(arg))),
        "config" => out(&or_absent(qrun::config(arg))),
        "id" => out(&m.id()),
        "attempt" => out(&m.attempt().to_string()),
        "delay" => match arg.parse::<u64>() {
            Ok(ms) => {
                let _ = qrun::set_delay(Duration::from_millis(ms));
                Verdict::Nack
            }
            Err(_) => Verdict::DeadLetter,
        },
        "deadreason" => qrun::dead_letter_with(arg),
        "nackreason" => qrun::nack_with(arg),
        "pub" => {
            let none: &[(&str, &str)] = &[];
            out(match qrun::publish(arg, b"x", none) {
                Ok(()) => "ok",
                Err(qrun::Error::Denied) => "denied",
                Err(_) => "error",
            })
        }
        "extend" => match arg.parse::<u64>() {
            Ok(ms) => out(match qrun::extend_lease(Duration::from_millis(ms)) {
                Ok(()) => "ok",
                Err(_) => "error",
            }),
            Err(_) => Verdict::DeadLetter,
        },
        "log" => {
            qrun::info(arg);
            Verdict::Ack
        }
        "count" => {
            let n = COUNT.with(|c| {
                c.set(c.get() + 1);
                c.get()
            });
            out(&n.to_string())
        }
        "http" => http(arg),
        "httpmany" => httpmany(arg),
        "retry" => retry(arg),
        _ => Verdict::DeadLetter,
    }
}

fn init() -> Result<(), String> {
    match qrun::config("refuse") {
        Some(v) => Err(format!("refused by config: {}", v)),
        None => Ok(()),
    }
}

qrun::handler!(handle, init = init);
