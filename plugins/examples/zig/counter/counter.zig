//! counter: a qrun handler that keeps state across messages in its instance
//! (Zig SDK, plugins/sdk/zig/qrun.zig).
//!
//! It counts messages per value of attribute config "count_by" (default
//! "key"; messages without it count under "(none)") in a hash map that lives
//! as long as the instance, and every config "emit_every" messages (default
//! 100) publishes the running totals to config "forward_to" as lines
//! "<key> <count>", sorted by key. The counts are per instance and start
//! over when the host replaces the instance (after a failure or a reload):
//! instance state is a cache, not storage.
const std = @import("std");
const qrun = @import("qrun");

pub const panic = qrun.panic;
comptime {
    qrun.exportAbi(@This());
}

const a = qrun.allocator;

var counts = std.StringHashMap(u64).init(a);
var seen: u64 = 0;
var count_by: []const u8 = "key";
var emit_every: u64 = 100;
var forward_to: ?[]u8 = null;

pub fn init() bool {
    if (qrun.config(a, "count_by") catch return false) |v| count_by = v;
    if (qrun.config(a, "emit_every") catch return false) |v| {
        defer a.free(v);
        emit_every = std.fmt.parseInt(u64, v, 10) catch 0;
        if (emit_every == 0) {
            qrun.logf(.err, "config emit_every must be a positive integer, not \"{s}\"", .{v});
            return false;
        }
    }
    forward_to = qrun.config(a, "forward_to") catch return false;
    return true;
}

pub fn handle(m: *const qrun.Message) qrun.Verdict {
    count(m) catch |err| {
        qrun.logf(.warn, "counting: {s}", .{@errorName(err)});
        return .nack;
    };
    seen += 1;
    if (seen % emit_every == 0) {
        if (forward_to) |q| emit(q) catch |err| {
            // The message is counted; retrying it would count it twice.
            qrun.logf(.warn, "publishing totals: {s}", .{@errorName(err)});
        };
    }
    return .ack;
}

fn count(m: *const qrun.Message) !void {
    const key = (try m.attr(a, count_by)) orelse try a.dupe(u8, "(none)");
    const entry = try counts.getOrPut(key);
    if (entry.found_existing) {
        a.free(key); // the map keeps its own copy of the key
        entry.value_ptr.* += 1;
    } else {
        entry.value_ptr.* = 1;
    }
}

fn lessThan(_: void, x: []const u8, y: []const u8) bool {
    return std.mem.lessThan(u8, x, y);
}

fn emit(queue: []const u8) !void {
    var keys = try a.alloc([]const u8, counts.count());
    defer a.free(keys);
    var it = counts.keyIterator();
    var i: usize = 0;
    while (it.next()) |k| : (i += 1) keys[i] = k.*;
    std.mem.sort([]const u8, keys, {}, lessThan);

    var body = std.ArrayList(u8).init(a);
    defer body.deinit();
    for (keys) |k| try body.writer().print("{s} {d}\n", .{ k, counts.get(k).? });
    try qrun.publish(queue, body.items, &.{});
}
