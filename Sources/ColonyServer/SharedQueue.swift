import ColonyWire
import Threading

/// Where a shared queue keeps its items, in the order its kind takes them out.
struct QueueItems {
    enum Order { case fifo, lifo, priority }

    let order: Order
    // FIFO: items[head...] oldest first. LIFO: newest last. Priority: sorted so the item
    // that leaves next is last; equal priorities leave in arrival order.
    private var items: [WireValue] = []
    private var head = 0

    init(order: Order) { self.order = order }

    var count: Int { items.count - head }

    mutating func push(_ item: WireValue) throws(RemoteError) {
        guard order == .priority else {
            items.append(item)
            return
        }
        // First position whose item leaves after `item` would (binary search; a comparison
        // that throws leaves the queue untouched).
        var low = 0
        var high = items.count
        while low < high {
            let middle = (low + high) / 2
            if try PythonSemantics.less(item, items[middle]) { low = middle + 1 } else { high = middle }
        }
        items.insert(item, at: low)
    }

    mutating func pop() -> WireValue {
        switch order {
        case .lifo, .priority:
            return items.removeLast()
        case .fifo:
            let item = items[head]
            items[head] = .null
            head += 1
            if head == items.count {
                items.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 64 && head * 2 > items.count {
                items.removeFirst(head)
                head = 0
            }
            return item
        }
    }

    /// Every item, in an order that pushing them again makes the same queue: arrival order
    /// for FIFO and LIFO, leaving order for priorities (equal ones then keep theirs).
    var pushOrder: [WireValue] {
        switch order {
        case .fifo: Array(items[head...])
        case .lifo: items
        case .priority: items.reversed()
        }
    }

    /// Every item, in no particular order.
    var all: ArraySlice<WireValue> { items[head...] }

    mutating func removeAll() -> [WireValue] {
        defer {
            items = []
            head = 0
        }
        return Array(items[head...])
    }
}

/// Python `queue.Queue`, `JoinableQueue`, `LifoQueue` and `PriorityQueue` served by the
/// manager: blocking puts and gets park (FIFO among waiters), `task_done`/`join`, and 3.13's
/// `shutdown`. Items handed to a parked getter go straight to it, without passing through
/// the queue.
final class SharedQueue: BlockingObject, PersistentObject, @unchecked Sendable {
    private enum Getter {
        case one
        case many(Int)
    }

    let type: ObjectType
    let maxSize: Int
    let lock = Lock()
    /// Kept queues record what each call did to their items (Persistence).
    var journal: ObjectJournal?
    // Guarded by lock.
    private var items: QueueItems
    private var getters = WaiterQueue<Getter>()
    private var putters = WaiterQueue<[WireValue]>()  // items not yet in the queue
    private var joiners = WaiterQueue<Void>()
    private var unfinishedTasks = 0
    private var isShutDown = false

    init(type: ObjectType, maxSize: Int) {
        self.type = type
        self.maxSize = maxSize
        let order: QueueItems.Order =
            switch type {
            case .lifoQueue: .lifo
            case .priorityQueue: .priority
            default: .fifo
            }
        items = QueueItems(order: order)
    }

    var size: Int { lock.withLock { items.count } }
    var waiting: Int { lock.withLock { getters.count + putters.count + joiners.count } }

    private var hasRoom: Bool { maxSize <= 0 || items.count < maxSize }

    func call(_ method: String, _ values: [WireValue], _ context: CallContext, _ changes: inout ReferenceChanges) throws(RemoteError)
        -> CallResult
    {
        var ready: [() -> Void] = []
        defer { for answer in ready { answer() } }
        return try lock.withLock { () throws(RemoteError) -> CallResult in
            switch method {
            case "put":
                let arguments = try Arguments(method, values, count: 1...3)
                let block = try arguments.bool(1, default: true)
                let timeout = try timeoutArgument(arguments.optional(2), method)
                try checkOpen()
                if items.count == 0, let getter = getters.first {
                    try items.push(arguments[0])  // validates a priority item the same way
                    let item = items.pop()
                    changes.adopt(item)  // handed over to the getter's session
                    _ = getters.popFirst()
                    unfinishedTasks += 1
                    journal?.effect("handoff")
                    ready.append(answer(getter.call, getter.payload, [item]))
                    return .answer(.null)
                }
                if hasRoom && putters.isEmpty {
                    try items.push(arguments[0])
                    changes.adopt(arguments[0])
                    unfinishedTasks += 1
                    journal?.effect("push", arguments[0])
                    return .answer(.null)
                }
                guard block, timeout != 0 else { throw RemoteError(.full, "the queue is full") }
                let parked = try context.park(on: self, method)
                changes.adopt(arguments[0])
                putters.append(parked, [arguments[0]])
                return .parked(parked, timeout: timeout)
            case "put_many":
                let arguments = try Arguments(method, values, count: 1...2)
                guard let batch = arguments[0].arrayValue else {
                    throw RemoteError(.wrongType, "put_many(): the items must be an array, not \(arguments[0].kindDescription)")
                }
                let timeout = try timeoutArgument(arguments.optional(1), method)
                try checkOpen()
                var remaining = batch[...]
                if putters.isEmpty {
                    while let item = remaining.first, hasRoom || !getters.isEmpty {
                        try items.push(item)
                        changes.adopt(item)
                        remaining.removeFirst()
                        unfinishedTasks += 1
                        journal?.effect("push", item)
                        ready += serveGetters()
                    }
                }
                if remaining.isEmpty { return .answer(.null) }
                guard timeout != 0 else {
                    let put = batch.count - remaining.count
                    throw RemoteError(.full, "the queue is full: \(put) of \(batch.count) items were put", detail: .integer(put))
                }
                let parked = try context.park(on: self, method)
                for item in remaining { changes.adopt(item) }
                putters.append(parked, Array(remaining))
                return .parked(parked, timeout: timeout)
            case "get", "get_many":
                let getter: Getter
                let block: Bool
                let timeout: Double?
                if method == "get" {
                    let arguments = try Arguments(method, values, count: 0...2)
                    getter = .one
                    block = try arguments.bool(0, default: true)
                    timeout = try timeoutArgument(arguments.optional(1), method)
                } else {
                    let arguments = try Arguments(method, values, count: 1...3)
                    let most = try arguments.int(0)
                    guard most > 0 else { throw RemoteError(.valueError, "get_many(): max must be positive") }
                    getter = .many(most)
                    block = try arguments.bool(1, default: true)
                    timeout = try timeoutArgument(arguments.optional(2), method)
                }
                if items.count > 0 {
                    let taken = take(getter)
                    for item in taken { changes.drop(item) }
                    ready += admitPutters()
                    if case .one = getter { return .answer(taken[0]) }
                    return .answer(.array(taken))
                }
                if isShutDown { throw RemoteError(.shutDown, "the queue is shut down and empty") }
                guard block, timeout != 0 else { throw RemoteError(.empty, "the queue is empty") }
                let parked = try context.park(on: self, method)
                getters.append(parked, getter)
                return .parked(parked, timeout: timeout)
            case "qsize":
                _ = try Arguments(method, values, count: 0...0)
                return .answer(.integer(items.count))
            case "empty":
                _ = try Arguments(method, values, count: 0...0)
                return .answer(.bool(items.count == 0))
            case "full":
                _ = try Arguments(method, values, count: 0...0)
                return .answer(.bool(maxSize > 0 && items.count >= maxSize))
            case "task_done":
                _ = try Arguments(method, values, count: 0...0)
                guard unfinishedTasks > 0 else { throw RemoteError(.valueError, "task_done() called too many times") }
                unfinishedTasks -= 1
                journal?.effect("done")
                if unfinishedTasks == 0 { ready += joiners.drain().map { waiter in { waiter.call.answer(true) } } }
                return .answer(.null)
            case "join":
                let arguments = try Arguments(method, values, count: 0...1)
                let timeout = try timeoutArgument(arguments.optional(0), method)
                if unfinishedTasks == 0 { return .answer(true) }
                if timeout == 0 { return .answer(false) }
                let parked = try context.park(on: self, method)
                joiners.append(parked, ())
                return .parked(parked, timeout: timeout)
            case "shutdown":
                let arguments = try Arguments(method, values, count: 0...1)
                let immediate = try arguments.bool(0, default: false)
                isShutDown = true
                journal?.effect("shutdown", .bool(immediate))
                if immediate {
                    for item in items.removeAll() {
                        changes.drop(item)
                        unfinishedTasks = max(0, unfinishedTasks - 1)
                    }
                    if unfinishedTasks == 0 { ready += joiners.drain().map { waiter in { waiter.call.answer(true) } } }
                }
                let shutDown = RemoteError(.shutDown, "the queue was shut down")
                for waiter in getters.drain() { ready.append { waiter.call.fail(shutDown) } }
                for waiter in putters.drain() {
                    for item in waiter.payload { changes.drop(item) }
                    ready.append { waiter.call.fail(shutDown) }
                }
                return .answer(.null)
            default:
                throw unknownMethod(type, method)
            }
        }
    }

    private func checkOpen() throws(RemoteError) {
        if isShutDown { throw RemoteError(.shutDown, "the queue is shut down; no more puts") }
    }

    private func take(_ getter: Getter) -> [WireValue] {
        let taken: [WireValue] =
            switch getter {
            case .one: [items.pop()]
            case .many(let most): (0..<min(most, items.count)).map { _ in items.pop() }
            }
        journal?.effect("pop", .integer(taken.count))
        return taken
    }

    private func answer(_ call: ParkedCall, _ getter: Getter, _ taken: [WireValue]) -> () -> Void {
        if case .one = getter { return { call.answer(taken[0]) } }
        return { call.answer(.array(taken)) }
    }

    /// Hands queued items to parked getters, first come first served. The items keep the
    /// queue's references, which pass to the getters' sessions.
    private func serveGetters() -> [() -> Void] {
        var ready: [() -> Void] = []
        while items.count > 0, let getter = getters.popFirst() {
            ready.append(answer(getter.call, getter.payload, take(getter.payload)))
        }
        return ready
    }

    /// Moves parked putters' items into the room there is now, in arrival order, and answers
    /// the putters that are done.
    private func admitPutters() -> [() -> Void] {
        var ready: [() -> Void] = []
        while hasRoom, var putter = putters.first {
            while hasRoom, !putter.payload.isEmpty {
                // Validated when first offered (put) or pushed in order (put_many).
                let item = putter.payload.removeFirst()
                try? items.push(item)
                unfinishedTasks += 1
                journal?.effect("push", item)
            }
            if putter.payload.isEmpty {
                _ = putters.popFirst()
                ready.append { putter.call.answer(.null) }
            } else {
                putters.updateFirst(putter.payload)
            }
        }
        return ready
    }

    func snapshot() -> KeptState {
        lock.withLock {
            // Tasks not done beyond the items queued are handoffs, as far as a restart can tell.
            var effects = items.pushOrder.map { (effect: "push", operand: $0) }
            effects += Array(repeating: (effect: "handoff", operand: .null), count: max(0, unfinishedTasks - items.count))
            if isShutDown { effects.append((effect: "shutdown", operand: false)) }
            return KeptState(options: ["maxsize": .integer(maxSize)], effects: effects)
        }
    }

    /// Redoes a recorded effect (Persistence), on a queue no session uses yet.
    func replay(_ effect: String, _ operand: WireValue, _ changes: inout ReferenceChanges) throws(RemoteError) {
        try lock.withLock { () throws(RemoteError) in
            switch effect {
            case "push":
                try items.push(operand)
                changes.adopt(operand)
                unfinishedTasks += 1
            case "pop":
                guard let count = operand.int64Value, count >= 0 else {
                    throw RemoteError(.badRequest, "a queue's recorded pop needs a count of items, not \(operand)")
                }
                for _ in 0..<min(Int(clamping: count), items.count) { changes.drop(items.pop()) }
            case "handoff":
                unfinishedTasks += 1
            case "done":
                unfinishedTasks = max(0, unfinishedTasks - 1)
            case "shutdown":
                isShutDown = true
                if operand.boolValue == true {
                    for item in items.removeAll() {
                        changes.drop(item)
                        unfinishedTasks = max(0, unfinishedTasks - 1)
                    }
                }
            default:
                throw RemoteError(.badRequest, "a queue has no recorded effect '\(effect)'")
            }
        }
    }

    func cancel(_ call: ParkedCall) -> [UInt64] {
        let (kind, dropped) = withdraw(call)
        if kind != nil { call.fail(RemoteError(.cancelled, "the call was cancelled")) }
        return dropped
    }

    func expire(_ call: ParkedCall) -> [UInt64] {
        let (kind, dropped) = withdraw(call)
        switch kind {
        case .join?: call.answer(false)
        case .put?: call.fail(RemoteError(.full, "the queue stayed full until the timeout"))
        case .get?: call.fail(RemoteError(.empty, "the queue stayed empty until the timeout"))
        case nil: break
        }
        return dropped
    }

    private enum WaiterKind { case get, put, join }

    /// Removes a parked call: which list it was in (nil: not parked here any more), and the
    /// references dropped with it (a putter's items).
    private func withdraw(_ call: ParkedCall) -> (WaiterKind?, [UInt64]) {
        lock.withLock {
            if getters.remove(call) != nil { return (.get, []) }
            if joiners.remove(call) != nil { return (.join, []) }
            guard let pending = putters.remove(call) else { return (nil, []) }
            var dropped: [UInt64] = []
            for item in pending { item.collectObjectIDs(into: &dropped) }
            return (.put, dropped)
        }
    }

    func sessionEnded(_ session: UInt64) -> [UInt64] {
        lock.withLock {
            _ = getters.removeAll(session: session)
            _ = joiners.removeAll(session: session)
            var dropped: [UInt64] = []
            for waiter in putters.removeAll(session: session) {
                for item in waiter.payload { item.collectObjectIDs(into: &dropped) }
            }
            return dropped
        }
    }

    func removeAll() -> [UInt64] {
        let gone = RemoteError(.noSuchObject, "the queue was freed while this call waited on it")
        let (references, waiting): ([UInt64], [ParkedCall]) = lock.withLock {
            var references: [UInt64] = []
            for item in items.removeAll() { item.collectObjectIDs(into: &references) }
            for waiter in putters.drain() {
                for item in waiter.payload { item.collectObjectIDs(into: &references) }
            }
            let waiting = getters.drain().map(\.call) + joiners.drain().map(\.call)
            return (references, waiting)
        }
        for call in waiting { call.fail(gone) }
        return references
    }

    func referencedIDs() -> [UInt64] {
        lock.withLock {
            var references = WireValue.array(Array(items.all)).objectIDs
            for waiter in putters.all {
                for item in waiter.payload { item.collectObjectIDs(into: &references) }
            }
            return references
        }
    }
}
