//! __NAME__: a qrun message handler written with the Zig SDK.
//!
//! It greets each message in the log and, when config "forward_to" names a
//! queue, publishes the body there with attribute greeted_by=__NAME__. An
//! empty body is dead-lettered: no retry can give it content.
const qrun = @import("qrun");

pub const panic = qrun.panic;
comptime {
    qrun.exportAbi(@This());
}

// Read once per instance: config does not change during its life.
var forward_to: ?[]u8 = null;

pub fn init() bool {
    forward_to = qrun.config(qrun.allocator, "forward_to") catch return false;
    return true;
}

pub fn handle(m: *const qrun.Message) qrun.Verdict {
    if (m.body.len == 0) {
        qrun.log(.warn, "empty body: nothing to greet");
        return .dead_letter;
    }
    qrun.logf(.info, "hello, {s}", .{m.body});
    if (forward_to) |queue| {
        qrun.publish(queue, m.body, &.{.{ .key = "greeted_by", .value = "__NAME__" }}) catch |err| {
            qrun.logf(.warn, "forward: {s}", .{@errorName(err)});
            return .nack; // retried with backoff
        };
    }
    return .ack;
}
