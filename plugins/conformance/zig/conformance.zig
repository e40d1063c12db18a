//! The Zig module of qrun's ABI conformance suite: the scripted behaviour of
//! plugins/conformance/README.md, written with the Zig SDK.
const std = @import("std");
const qrun = @import("qrun");

pub const panic = qrun.panic;
comptime {
    qrun.exportAbi(@This());
}

const a = qrun.allocator;

// Lives as long as the instance: the "count" command proves it.
var count: u32 = 0;

fn out(s: []const u8) qrun.Verdict {
    qrun.publish("out", s, &.{}) catch return .nack;
    return .ack;
}

fn outOrAbsent(v: anyerror!?[]u8) qrun.Verdict {
    const got = v catch return .nack;
    if (got) |s| {
        defer a.free(s);
        return out(s);
    }
    return out("<absent>");
}

fn echo(m: *const qrun.Message, arg: []const u8) !void {
    const attrs = try m.attrs(a);
    defer qrun.freeAttrs(a, attrs);
    try qrun.publish("out", arg, attrs);
}

// errWord names a failed request's error as the script does.
fn errWord(e: anyerror) []const u8 {
    return switch (e) {
        error.Denied => "denied",
        error.TooLarge => "toolarge",
        error.Timeout => "timeout",
        error.Connect => "connect",
        error.Limit => "limit",
        else => "error",
    };
}

fn http(url: []const u8) qrun.Verdict {
    var num: [16]u8 = undefined;
    var resp = qrun.fetch(a, .{ .method = "POST", .url = url, .headers = &.{.{ .key = "X-Guest", .value = "yes" }}, .body = "ping" }) catch |e| return out(errWord(e));
    defer resp.deinit(a);
    const v = out(std.fmt.bufPrint(&num, "{d}", .{resp.status}) catch unreachable);
    if (v != .ack) return v;
    return out(resp.body);
}

fn httpmany(url: []const u8) qrun.Verdict {
    var num: [16]u8 = undefined;
    var n: u32 = 0;
    while (true) : (n += 1) {
        var resp = qrun.fetch(a, .{ .url = url }) catch |e| {
            const v = out(std.fmt.bufPrint(&num, "{d}", .{n}) catch unreachable);
            if (v != .ack) return v;
            return out(errWord(e));
        };
        resp.deinit(a);
    }
}

fn retry(url: []const u8) qrun.Verdict {
    var resp = qrun.fetch(a, .{ .url = url }) catch return .nack;
    defer resp.deinit(a);
    if (resp.status >= 200 and resp.status < 300) return .ack;
    return qrun.retryLater(resp.status);
}

// kvWord names a failed store or state call's error as the script does.
fn kvWord(e: anyerror) []const u8 {
    return switch (e) {
        error.Denied => "denied",
        error.Invalid => "invalid",
        error.TooLarge => "toolarge",
        error.Conflict => "conflict",
        error.Unsupported => "unsupported",
        else => "error",
    };
}

// outRead publishes a value read from a store or the state, "<absent>", or
// the error's word.
fn outRead(v: anyerror!?[]u8) qrun.Verdict {
    const got = v catch |e| return out(kvWord(e));
    if (got) |s| {
        defer a.free(s);
        return out(s);
    }
    return out("<absent>");
}

// outOK publishes "ok", or the error's word.
fn outOK(r: anyerror!void) qrun.Verdict {
    r catch |e| return out(kvWord(e));
    return out("ok");
}

// kv runs the store and state commands; null for any other command. Not
// inlined, so that handle's trivial path (BenchmarkHandle) stays as it was.
noinline fn kv(m: *const qrun.Message, cmd: []const u8, arg: []const u8) ?qrun.Verdict {
    const s = qrun.store("kv");
    var num: [24]u8 = undefined;
    if (std.mem.eql(u8, cmd, "kvget")) return outRead(s.get(a, arg));
    if (std.mem.eql(u8, cmd, "kvset")) return outOK(s.set("k", arg, 0));
    if (std.mem.eql(u8, cmd, "kvttl")) {
        const ms = std.fmt.parseInt(i64, arg, 10) catch return .dead_letter;
        return outOK(s.set("k", "t", ms));
    }
    if (std.mem.eql(u8, cmd, "kvver")) {
        const v = s.version("k") catch |e| return out(kvWord(e));
        return out(std.fmt.bufPrint(&num, "{d}", .{v}) catch unreachable);
    }
    if (std.mem.eql(u8, cmd, "kvcas")) {
        const v = std.fmt.parseInt(u64, arg, 10) catch return .dead_letter;
        return outOK(s.cas("k", v, "cas", 0));
    }
    if (std.mem.eql(u8, cmd, "kvdel")) return outOK(s.delete("k"));
    if (std.mem.eql(u8, cmd, "kvincr")) {
        const d = std.fmt.parseInt(i64, arg, 10) catch return .dead_letter;
        const n = s.incr("k", d) catch |e| return out(kvWord(e));
        return out(std.fmt.bufPrint(&num, "{d}", .{n}) catch unreachable);
    }
    if (std.mem.eql(u8, cmd, "kvadd")) {
        const d = std.fmt.parseInt(i64, arg, 10) catch return .dead_letter;
        return outOK(s.add("k", d));
    }
    if (std.mem.eql(u8, cmd, "kvaddget")) {
        const d = std.fmt.parseInt(i64, arg, 10) catch return .dead_letter;
        const v = outOK(s.add("k", d));
        if (v != .ack) return v;
        return outRead(s.get(a, "k"));
    }
    if (std.mem.eql(u8, cmd, "kvrw")) {
        s.set("k", arg, 0) catch |e| return out(kvWord(e));
        return outRead(s.get(a, "k"));
    }
    if (std.mem.eql(u8, cmd, "kvother")) return outRead(qrun.store("other").get(a, "k"));
    if (std.mem.eql(u8, cmd, "state")) {
        if (outRead(m.state(a)) == .ack) _ = outOK(m.setState(arg));
        return .nack;
    }
    return null;
}

pub fn handle(m: *const qrun.Message) qrun.Verdict {
    const body = m.body;
    const i = std.mem.indexOfScalar(u8, body, ':');
    const cmd = if (i) |n| body[0..n] else body;
    const arg = if (i) |n| body[n + 1 ..] else body[body.len..];
    var num: [16]u8 = undefined;

    if (std.mem.eql(u8, cmd, "verdict")) {
        // Any number, bad verdicts included: they are part of the script.
        const n = std.fmt.parseInt(i32, arg, 10) catch return .dead_letter;
        return @enumFromInt(n);
    } else if (std.mem.eql(u8, cmd, "trap")) {
        @trap();
    } else if (std.mem.eql(u8, cmd, "echo")) {
        echo(m, arg) catch return .nack;
        return .ack;
    } else if (std.mem.eql(u8, cmd, "attr")) {
        return outOrAbsent(m.attr(a, arg));
    } else if (std.mem.eql(u8, cmd, "config")) {
        return outOrAbsent(qrun.config(a, arg));
    } else if (std.mem.eql(u8, cmd, "id")) {
        const id = m.id(a) catch return .nack;
        defer a.free(id);
        return out(id);
    } else if (std.mem.eql(u8, cmd, "attempt")) {
        return out(std.fmt.bufPrint(&num, "{d}", .{m.attempt()}) catch unreachable);
    } else if (std.mem.eql(u8, cmd, "delay")) {
        const ms = std.fmt.parseInt(i64, arg, 10) catch return .dead_letter;
        qrun.setDelay(ms) catch {};
        return .nack;
    } else if (std.mem.eql(u8, cmd, "deadreason")) {
        return qrun.deadLetterWith(arg);
    } else if (std.mem.eql(u8, cmd, "nackreason")) {
        return qrun.nackWith(arg);
    } else if (std.mem.eql(u8, cmd, "pub")) {
        qrun.publish(arg, "x", &.{}) catch |e| return out(if (e == error.Denied) "denied" else "error");
        return out("ok");
    } else if (std.mem.eql(u8, cmd, "extend")) {
        const ms = std.fmt.parseInt(i64, arg, 10) catch return .dead_letter;
        qrun.extendLease(ms) catch return out("error");
        return out("ok");
    } else if (std.mem.eql(u8, cmd, "log")) {
        qrun.log(.info, arg);
        return .ack;
    } else if (std.mem.eql(u8, cmd, "count")) {
        count += 1;
        return out(std.fmt.bufPrint(&num, "{d}", .{count}) catch unreachable);
    } else if (std.mem.eql(u8, cmd, "http")) {
        return http(arg);
    } else if (std.mem.eql(u8, cmd, "httpmany")) {
        return httpmany(arg);
    } else if (std.mem.eql(u8, cmd, "retry")) {
        return retry(arg);
    }
    return kv(m, cmd, arg) orelse .dead_letter;
}

pub fn init() bool {
    const refuse = qrun.config(a, "refuse") catch return false;
    if (refuse) |v| {
        defer a.free(v);
        qrun.logf(.err, "init failed: refused by config: {s}", .{v});
        return false;
    }
    return true;
}
