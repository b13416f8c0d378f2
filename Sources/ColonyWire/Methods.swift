/// One method a shared object answers, as the catalog in SPEC.md lists it.
public struct MethodSpec: Hashable, Sendable {
    public var type: ObjectType
    /// The wire name, sent in `["call", id, name, args]`.
    public var name: String
    /// The argument list, as SPEC.md writes it.
    public var arguments: String
    /// The answer, as SPEC.md writes it.
    public var result: String
    /// Whether the call may be parked on the server until it can complete.
    public var blocking: Bool
    /// The Python method it corresponds to.
    public var python: String
}

/// Every method of every object type in this protocol version. Servers dispatch on these
/// names; a test checks that SPEC.md has a row for each.
public enum MethodCatalog {
    public static let all: [MethodSpec] = dict + list + namespace + value + array + queue + locks + semaphore
        + condition + event + barrier + pool + set

    public static func methods(of type: ObjectType) -> [MethodSpec] {
        let family: ObjectType =
            switch type {
            case .joinableQueue, .lifoQueue, .priorityQueue: .queue
            case .rlock: .lock
            case .boundedSemaphore: .semaphore
            default: type
            }
        return all.filter { $0.type == family }
    }

    public static func find(_ type: ObjectType, _ name: String) -> MethodSpec? {
        methods(of: type).first { $0.name == name }
    }

    private static func m(
        _ type: ObjectType, _ name: String, _ arguments: String, _ result: String, blocking: Bool = false, _ python: String
    ) -> MethodSpec {
        MethodSpec(type: type, name: name, arguments: arguments, result: result, blocking: blocking, python: python)
    }

    static let dict: [MethodSpec] = [
        m(.dict, "getitem", "key", "value; KeyError", "d[key]"),
        m(.dict, "setitem", "key, value", "nil", "d[key] = value"),
        m(.dict, "delitem", "key", "nil; KeyError", "del d[key]"),
        m(.dict, "contains", "key", "bool", "key in d"),
        m(.dict, "len", "", "int", "len(d)"),
        m(.dict, "keys", "", "[key]", "d.keys()"),
        m(.dict, "values", "", "[value]", "d.values()"),
        m(.dict, "items", "", "[[key, value]]", "d.items()"),
        m(.dict, "get", "key, default", "value or default", "d.get(key, default)"),
        m(.dict, "pop", "key[, default]", "value; KeyError without default", "d.pop(key[, default])"),
        m(.dict, "popitem", "", "[key, value]; KeyError when empty", "d.popitem()"),
        m(.dict, "setdefault", "key, default", "value", "d.setdefault(key, default)"),
        m(.dict, "update", "{key: value}", "nil", "d.update(other)"),
        m(.dict, "clear", "", "nil", "d.clear()"),
        m(.dict, "copy", "", "{key: value}", "d.copy()"),
        m(.dict, "or", "{key: value}", "{key: value}", "d | other"),
        m(.dict, "fromkeys", "[key], value", "{key: value}", "d.fromkeys(keys, value)"),
        m(.dict, "reversed", "", "[key]", "reversed(d)"),
        m(.dict, "page", "cursor, count", "[next cursor or nil, [[key, value]]]", "iter(d)"),
        m(.dict, "incr", "key, delta, initial", "new value; WrongType if not a number", "(atomic d[key] += delta)"),
        m(.dict, "cas", "key, expected or nil, new", "bool", "(atomic compare-and-set)"),
    ]

    static let list: [MethodSpec] = [
        m(.list, "getitem", "index", "value; IndexError", "l[i]"),
        m(.list, "setitem", "index, value", "nil; IndexError", "l[i] = value"),
        m(.list, "delitem", "index", "nil; IndexError", "del l[i]"),
        m(.list, "getslice", "start, stop, step", "[value]", "l[start:stop:step]"),
        m(.list, "setslice", "start, stop, step, [value]", "nil; ValueError", "l[start:stop:step] = values"),
        m(.list, "delslice", "start, stop, step", "nil", "del l[start:stop:step]"),
        m(.list, "append", "value", "nil", "l.append(value)"),
        m(.list, "extend", "[value]", "nil", "l.extend(values)"),
        m(.list, "insert", "index, value", "nil", "l.insert(i, value)"),
        m(.list, "pop", "[index]", "value; IndexError", "l.pop([i])"),
        m(.list, "remove", "value", "nil; ValueError", "l.remove(value)"),
        m(.list, "index", "value, start, stop", "int; ValueError", "l.index(value, start, stop)"),
        m(.list, "count", "value", "int", "l.count(value)"),
        m(.list, "reverse", "", "nil", "l.reverse()"),
        m(.list, "sort", "reverse", "nil; WrongType for mixed kinds", "l.sort(reverse=False)"),
        m(.list, "len", "", "int", "len(l)"),
        m(.list, "contains", "value", "bool", "value in l"),
        m(.list, "copy", "", "[value]", "l[:]"),
        m(.list, "clear", "", "nil", "l.clear()"),
        m(.list, "add", "[value]", "[value]", "l + other"),
        m(.list, "mul", "n", "[value]", "l * n"),
        m(.list, "imul", "n", "nil", "l *= n"),
    ]

    static let namespace: [MethodSpec] = [
        m(.namespace, "getattr", "name", "value; AttributeError", "ns.name"),
        m(.namespace, "setattr", "name, value", "nil", "ns.name = value"),
        m(.namespace, "delattr", "name", "nil; AttributeError", "del ns.name"),
        m(.namespace, "attrs", "", "{name: value}", "vars(ns)"),
    ]

    static let value: [MethodSpec] = [
        m(.value, "get", "", "value", "v.value"),
        m(.value, "set", "value", "nil; WrongType", "v.value = x"),
        m(.value, "incr", "delta", "new value", "(atomic v.value += delta)"),
        m(.value, "cas", "expected, new", "bool", "(atomic compare-and-set)"),
        m(.value, "get_lock", "", "object reference (rlock)", "v.get_lock()"),
    ]

    static let array: [MethodSpec] = [
        m(.array, "getitem", "index", "value; IndexError", "a[i]"),
        m(.array, "setitem", "index, value", "nil; IndexError, WrongType", "a[i] = x"),
        m(.array, "getslice", "start, stop, step", "[value]", "a[start:stop:step]"),
        m(.array, "setslice", "start, stop, step, [value]", "nil; ValueError", "a[start:stop] = values"),
        m(.array, "len", "", "int", "len(a)"),
        m(.array, "copy", "", "[value]", "a[:]"),
        m(.array, "incr", "index, delta", "new value", "(atomic a[i] += delta)"),
        m(.array, "get_lock", "", "object reference (rlock)", "a.get_lock()"),
    ]

    static let queue: [MethodSpec] = [
        m(.queue, "put", "item, block, timeout", "nil; Full, ShutDown", blocking: true, "q.put(item, block, timeout)"),
        m(.queue, "get", "block, timeout", "item; Empty, ShutDown", blocking: true, "q.get(block, timeout)"),
        m(.queue, "put_many", "[item], timeout", "nil; Full, ShutDown", blocking: true, "(batch put)"),
        m(.queue, "get_many", "max, block, timeout", "[item]; Empty, ShutDown", blocking: true, "(batch get)"),
        m(.queue, "qsize", "", "int", "q.qsize()"),
        m(.queue, "empty", "", "bool", "q.empty()"),
        m(.queue, "full", "", "bool", "q.full()"),
        m(.queue, "task_done", "", "nil; ValueError", "q.task_done()"),
        m(.queue, "join", "timeout", "bool", blocking: true, "q.join()"),
        m(.queue, "shutdown", "immediate", "nil", "q.shutdown(immediate)"),
    ]

    static let locks: [MethodSpec] = [
        m(.lock, "acquire", "owner, blocking, timeout", "grant", blocking: true, "L.acquire(blocking, timeout)"),
        m(.lock, "release", "owner", "nil; NotOwner", "L.release()"),
        m(.lock, "locked", "", "bool", "L.locked()"),
        m(.lock, "is_owned", "owner", "bool", "L._is_owned()"),
    ]

    static let semaphore: [MethodSpec] = [
        m(.semaphore, "acquire", "owner, blocking, timeout", "grant", blocking: true, "s.acquire(blocking, timeout)"),
        m(.semaphore, "release", "owner, n", "nil; ValueError (bounded)", "s.release(n)"),
        m(.semaphore, "value", "", "int", "s._value"),
    ]

    static let condition: [MethodSpec] = [
        m(.condition, "acquire", "owner, blocking, timeout", "grant", blocking: true, "c.acquire()"),
        m(.condition, "release", "owner", "nil; NotOwner", "c.release()"),
        m(.condition, "is_owned", "owner", "bool", "c._is_owned()"),
        m(.condition, "wait", "owner, timeout", "bool; NotOwner", blocking: true, "c.wait(timeout)"),
        m(.condition, "notify", "owner, n", "nil; NotOwner", "c.notify(n)"),
        m(.condition, "notify_all", "owner", "nil; NotOwner", "c.notify_all()"),
    ]

    static let event: [MethodSpec] = [
        m(.event, "set", "", "nil", "e.set()"),
        m(.event, "clear", "", "nil", "e.clear()"),
        m(.event, "is_set", "", "bool", "e.is_set()"),
        m(.event, "wait", "timeout", "bool", blocking: true, "e.wait(timeout)"),
    ]

    static let barrier: [MethodSpec] = [
        m(.barrier, "wait", "timeout", "{index}; BrokenBarrier", blocking: true, "b.wait(timeout)"),
        m(.barrier, "await_action", "", "nil (a round needs the action)", blocking: true, "(the creator runs the action)"),
        m(.barrier, "action_done", "ok[, error]", "nil", "(the action ran)"),
        m(.barrier, "reset", "", "nil", "b.reset()"),
        m(.barrier, "abort", "", "nil", "b.abort()"),
        m(.barrier, "parties", "", "int", "b.parties"),
        m(.barrier, "n_waiting", "", "int", "b.n_waiting"),
        m(.barrier, "broken", "", "bool", "b.broken"),
    ]

    static let set: [MethodSpec] = [
        m(.set, "add", "member", "nil", "s.add(x)"),
        m(.set, "discard", "member", "nil", "s.discard(x)"),
        m(.set, "remove", "member", "nil; KeyError", "s.remove(x)"),
        m(.set, "pop", "", "member; KeyError when empty", "s.pop()"),
        m(.set, "contains", "member", "bool", "x in s"),
        m(.set, "len", "", "int", "len(s)"),
        m(.set, "copy", "", "[member]", "s.copy()"),
        m(.set, "clear", "", "nil", "s.clear()"),
        m(.set, "page", "cursor, count", "[next cursor or nil, [member]]", "iter(s)"),
        m(.set, "update", "[member]", "nil", "s.update(other), s |= other"),
        m(.set, "difference_update", "[member]", "nil", "s.difference_update(other), s -= other"),
        m(.set, "intersection_update", "[member]", "nil", "s.intersection_update(other), s &= other"),
        m(.set, "symmetric_difference_update", "[member]", "nil", "s.symmetric_difference_update(other), s ^= other"),
        m(.set, "union", "[member]", "[member]", "s.union(other), s | other"),
        m(.set, "intersection", "[member]", "[member]", "s.intersection(other), s & other"),
        m(.set, "difference", "[member]", "[member]", "s.difference(other), s - other"),
        m(.set, "symmetric_difference", "[member]", "[member]", "s.symmetric_difference(other), s ^ other"),
        m(.set, "issubset", "[member]", "bool", "s.issubset(other), s <= other"),
        m(.set, "issuperset", "[member]", "bool", "s.issuperset(other), s >= other"),
        m(.set, "isdisjoint", "[member]", "bool", "s.isdisjoint(other)"),
    ]

    static let pool: [MethodSpec] = [
        m(.pool, "submit", "task, [arg], job id", "job id", "p.apply_async(f, args)"),
        m(.pool, "apply", "task, [arg]", "value; TaskFailed, WorkerLost, NoSuchTask", blocking: true, "p.apply(f, args)"),
        m(.pool, "map", "task, [call], chunksize, ordered, more, starred", "job id", "p.map_async / imap / imap_unordered"),
        m(.pool, "feed", "job id, [call], last", "nil", "(imap: the next window of the iterable)"),
        m(.pool, "result", "job id, timeout", "value; TaskFailed, WorkerLost, NoSuchTask, Timeout", blocking: true, "r.get(timeout)"),
        m(.pool, "next", "job id, max, timeout", "[finished, [value], completed, total, [[position, error]]]; Timeout", blocking: true, "next(imap iterator)"),
        m(.pool, "wait", "job id, timeout", "bool", blocking: true, "r.wait(timeout)"),
        m(.pool, "ready", "job id", "bool", "r.ready()"),
        m(.pool, "successful", "job id", "bool; ValueError while running", "r.successful()"),
        m(.pool, "progress", "job id", "[completed, total or nil]", "(imap progress)"),
        m(.pool, "cancel", "job id", "bool", "f.cancel()"),
        m(.pool, "close", "", "nil", "p.close()"),
        m(.pool, "terminate", "", "nil", "p.terminate()"),
        m(.pool, "join", "timeout", "bool; ValueError before close", blocking: true, "p.join()"),
        m(.pool, "workers", "", "[{node, pid, processes, capacity, busy, tasks, draining, done}]", "(pool status)"),
        m(.pool, "adopt", "job id", "nil; ValueError unless its client was lost", "(take over a crashed client's job)"),
        m(.pool, "results", "max, timeout", "[[job id, ok, value or error]]", blocking: true, "(Pool's result handler)"),
    ]
}

/// The methods of a pool object (SPEC.md 6.3), one case per `MethodCatalog.pool` row.
public enum PoolMethod: String, CaseIterable, Sendable {
    case submit, apply, map, feed, result, next, wait, ready, successful, progress, cancel, close, terminate, join, workers, adopt, results
}
