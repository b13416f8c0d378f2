import Testing
@testable import Threading

@Suite struct QueueTests {
    @Test func fifoLifoAndPriorityOrders() throws {
        let fifo = Queue<Int>(), lifo = LifoQueue<Int>(), priority = PriorityQueue<Int>()
        for value in [5, 1, 4, 2, 3] {
            try fifo.put(value)
            try lifo.put(value)
            try priority.put(value)
        }
        #expect(try (0..<5).map { _ in try fifo.get() } == [5, 1, 4, 2, 3])
        #expect(try (0..<5).map { _ in try lifo.get() } == [3, 2, 4, 1, 5])
        #expect(try (0..<5).map { _ in try priority.get() } == [1, 2, 3, 4, 5])
    }

    @Test func priorityWithCustomOrderingAsPythonTuples() throws {
        struct Job: Sendable { let priority: Int; let name: String }
        let queue = PriorityQueue<Job>(by: { $0.priority < $1.priority })
        for (priority, name) in [(3, "low"), (1, "urgent"), (2, "normal")] {
            try queue.put(Job(priority: priority, name: name))
        }
        #expect(try (0..<3).map { _ in try queue.get().name } == ["urgent", "normal", "low"])
    }

    @Test func priorityHeapStaysOrderedUnderRandomUse() throws {
        var generator = SplitMix(seed: 42)
        let queue = PriorityQueue<Int>()
        var model: [Int] = []
        for _ in 0..<5_000 {
            if model.isEmpty || generator.next() % 3 != 0 {
                let value = Int(generator.next() % 1000)
                try queue.put(value)
                model.append(value)
            } else {
                model.sort()
                #expect(try queue.get() == model.removeFirst())
            }
        }
        model.sort()
        #expect(try model.map { _ in try queue.get() } == model)
    }

    @Test func fifoRingWrapsAndGrows() throws {
        let queue = Queue<Int>()
        var next = 0, expected = 0
        for round in 1...50 {
            for _ in 0..<round { try queue.put(next); next += 1 }
            for _ in 0..<(round / 2) { #expect(try queue.get() == expected); expected += 1 }
        }
        while expected < next { #expect(try queue.get() == expected); expected += 1 }
        #expect(queue.isEmpty)
    }

    @Test func sizeEmptyAndFull() throws {
        let queue = Queue<String>(maxsize: 2)
        #expect(queue.maxsize == 2)
        #expect(queue.isEmpty && !queue.isFull && queue.qsize == 0)
        try queue.put("a")
        try queue.putNowait("b")
        #expect(queue.isFull && queue.qsize == 2)
        #expect(throws: QueueFull.self) { try queue.putNowait("c") }
        #expect(throws: QueueFull.self) { try queue.put("c", block: false) }
        #expect(throws: QueueFull.self) { try queue.put("c", timeout: 0.02) }
        #expect(try queue.getNowait() == "a")
        #expect(try queue.get(block: false) == "b")
        #expect(throws: QueueEmpty.self) { try queue.getNowait() }
        #expect(throws: QueueEmpty.self) { try queue.get(timeout: 0.02) }
        #expect(throws: QueueEmpty.self) { try queue.get(timeout: 0) }
        #expect(throws: ThreadingError.self) { try queue.get(timeout: -1) }
        #expect(throws: ThreadingError.self) { try queue.put("x", timeout: -1) }
    }

    @Test func unboundedWhenMaxsizeIsZeroOrNegative() throws {
        let queue = Queue<Int>(maxsize: -1)
        for i in 0..<1_000 { try queue.putNowait(i) }
        #expect(!queue.isFull)
        #expect(queue.qsize == 1_000)
    }

    @Test func blockedGetWakesOnPutAndBlockedPutOnGet() throws {
        let queue = Queue<Int>(maxsize: 1)
        let got = Recorder<Int>()
        let getter = try spawn { got.append(try queue.get(timeout: patience)) }
        _ = Event().wait(timeout: 0.02)
        try queue.put(1)
        try joinAll([getter])
        #expect(got.values == [1])

        try queue.put(2)
        let putter = try spawn { try queue.put(3, timeout: patience) }
        _ = Event().wait(timeout: 0.02)
        #expect(queue.qsize == 1)
        #expect(try queue.get() == 2)
        try joinAll([putter])
        #expect(try queue.get() == 3)
    }

    @Test func taskDoneAndJoin() throws {
        let queue = Queue<Int>()
        #expect(queue.join(timeout: 0))  // nothing outstanding
        for i in 0..<10 { try queue.put(i) }
        #expect(!queue.join(timeout: 0.01))
        let processed = Counter()
        let workers = try (0..<3).map { _ in
            try spawn {
                while let item = try? queue.get(timeout: 0.1) {
                    processed.add(item)
                    try queue.taskDone()
                }
            }
        }
        #expect(queue.join(timeout: patience))
        #expect(processed.value == 45)
        try joinAll(workers)
        #expect(throws: ThreadingError.self) { try queue.taskDone() }
    }

    @Test func shutdownGentleLetsItemsDrain() throws {
        let queue = Queue<Int>()
        try queue.put(1)
        let blockedPutQueue = Queue<Int>(maxsize: 1)
        try blockedPutQueue.put(0)
        let putOutcome = Recorder<String>()
        let putter = try spawn {
            do { try blockedPutQueue.put(1, timeout: patience) } catch is QueueShutDown { putOutcome.append("shut down") }
        }
        queue.shutdown()
        #expect(queue.isShutDown)
        #expect(throws: QueueShutDown.self) { try queue.put(2) }
        #expect(try queue.get() == 1)
        #expect(throws: QueueShutDown.self) { try queue.get() }
        #expect(throws: QueueShutDown.self) { try queue.getNowait() }
        _ = Event().wait(timeout: 0.02)
        blockedPutQueue.shutdown()
        try joinAll([putter])
        #expect(putOutcome.values == ["shut down"])
    }

    @Test func shutdownWakesBlockedGetters() throws {
        let queue = Queue<Int>()
        let outcomes = Recorder<String>()
        let getters = try (0..<3).map { _ in
            try spawn {
                do { _ = try queue.get(timeout: patience) } catch is QueueShutDown { outcomes.append("shut down") }
            }
        }
        _ = Event().wait(timeout: 0.02)
        queue.shutdown()
        try joinAll(getters)
        #expect(outcomes.values == ["shut down", "shut down", "shut down"])
    }

    @Test func immediateShutdownDropsItemsAndReleasesJoin() throws {
        let queue = Queue<Int>()
        for i in 0..<5 { try queue.put(i) }
        let joined = Event()
        let joiner = try spawn { if queue.join(timeout: patience) { joined.set() } }
        queue.shutdown(immediate: true)
        #expect(queue.qsize == 0)
        #expect(throws: QueueShutDown.self) { try queue.get() }
        #expect(joined.wait(timeout: patience))
        try joinAll([joiner])
    }

    @Test func manyProducersAndConsumersDeliverEveryItemOnce() throws {
        let queue = Queue<Int>(maxsize: 64)
        let producers = 4, consumers = 4, perProducer = 20_000
        let seen = Recorder<[Int]>()
        let producerThreads = try (0..<producers).map { p in
            try spawn { for i in 0..<perProducer { try queue.put(p * perProducer + i, timeout: patience) } }
        }
        let consumerThreads = try (0..<consumers).map { _ in
            try spawn {
                var mine: [Int] = []
                while true {
                    let item = try queue.get(timeout: patience)
                    if item < 0 { break }
                    mine.append(item)
                }
                seen.append(mine)
            }
        }
        try joinAll(producerThreads)
        for _ in 0..<consumers { try queue.put(-1) }
        try joinAll(consumerThreads)
        let all = seen.values.flatMap { $0 }.sorted()
        #expect(all == Array(0..<(producers * perProducer)))
    }

    @Test func simpleQueue() throws {
        let queue = SimpleQueue<String>()
        #expect(queue.isEmpty)
        queue.put("a")
        queue.putNowait("b")
        #expect(queue.qsize == 2)
        #expect(try queue.get() == "a")
        #expect(try queue.getNowait() == "b")
        #expect(throws: QueueEmpty.self) { try queue.get(timeout: 0.01) }
        #expect(throws: QueueEmpty.self) { try queue.get(block: false) }
    }

    @Test func queueReleasesItsItems() throws {
        final class Tracked: @unchecked Sendable {
            let counter: Counter
            init(_ counter: Counter) { self.counter = counter }
            deinit { counter.add() }
        }
        let released = Counter()
        do {
            let queue = Queue<Tracked>(), lifo = LifoQueue<Tracked>()
            let priority = PriorityQueue<Tracked>(by: { ObjectIdentifier($0) < ObjectIdentifier($1) })
            for _ in 0..<40 {
                try queue.put(Tracked(released))
                try lifo.put(Tracked(released))
                try priority.put(Tracked(released))
            }
            _ = try queue.get()
        }
        #expect(released.value == 120)
    }
}

/// A small deterministic random generator for reproducible tests.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
