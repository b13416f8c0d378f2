import ColonyWire
import NIOCore
import Threading

/// A named pool task with typed arguments and result, declared once in code that the client
/// and the worker program both import: `let square = PoolTask<Int, Int>("square")`. The worker
/// registers the body (`registry.register(square) { $0 * $0 }`); the client calls
/// `pool.map(square, 1...100)`. No code travels: both sides know the task by its name.
public struct PoolTask<Arguments: Codable & Sendable, Output: Codable & Sendable>: Hashable, Sendable {
    public let name: String
    public init(_ name: String) { self.name = name }
}

/// A pool call that did not produce a result (Python re-raises the task's exception; Colony
/// says which kind of failure it was).
public struct PoolError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Kind: Hashable, Sendable { case taskFailed, workerLost, noSuchTask }
        private let kind: Kind
        /// The task threw; `errorType` and `message` say what.
        public static let taskFailed = Code(kind: .taskFailed)
        /// Every worker that ran the call died (`max_attempts` times): the call itself may be
        /// what kills them.
        public static let workerLost = Code(kind: .workerLost)
        /// No worker of the pool registered a task of that name.
        public static let noSuchTask = Code(kind: .noSuchTask)
        public var description: String {
            switch kind {
            case .taskFailed: "TaskFailed"
            case .workerLost: "WorkerLost"
            case .noSuchTask: "NoSuchTask"
            }
        }
    }

    public let code: Code
    /// The task's name.
    public let task: String
    public let message: String
    /// For `taskFailed`: the Swift type of the error the task threw.
    public let errorType: String?
    /// The worker node the call last ran on, when known.
    public let node: String?

    public var description: String { "\(code) in task '\(task)': \(message)" }

    /// The error a caller gets for a pool call that failed on the manager: PoolError for the
    /// pool's own codes, TimeoutError and CancelledError as local futures throw them.
    static func from(_ error: RemoteError, task: String) -> any Error {
        let detail = error.detail
        switch error.code {
        case .taskFailed:
            return PoolError(
                code: .taskFailed, task: task, message: detail["message"]?.stringValue ?? error.message,
                errorType: detail["type"]?.stringValue, node: detail["node"]?.stringValue)
        case .workerLost:
            return PoolError(code: .workerLost, task: task, message: error.message, errorType: nil, node: detail["node"]?.stringValue)
        case .noSuchTask:
            return PoolError(code: .noSuchTask, task: task, message: error.message, errorType: nil, node: nil)
        default:
            return error.localError
        }
    }
}

/// A worker node of a pool, as `Pool.workers()` shows it.
public struct PoolWorkerInfo: Hashable, Sendable {
    public var node: String
    public var pid: Int
    public var processes: Int
    /// Assignments it holds at once, and holds now.
    public var capacity: Int
    public var busy: Int
    public var tasks: [String]
    public var draining: Bool
    /// Calls it has finished.
    public var done: Int
}

extension Manager {
    /// Python `multiprocessing.Pool()`, spread over the worker nodes that join the manager's
    /// pool `name` (`colony worker --pool NAME`; "default" when neither side names one).
    /// `chunksize`, `maxAttempts` and `orphanGrace` (how long the jobs of a client that
    /// crashed wait to be adopted; 60 s by default) apply when this call creates the pool.
    public func pool(_ name: String = "default", chunksize: Int? = nil, maxAttempts: Int? = nil, orphanGrace: Duration? = nil)
        async throws -> Pool
    {
        let options: WireValue = [
            "chunksize": chunksize.map { .integer($0) } ?? .null, "max_attempts": maxAttempts.map { .integer($0) } ?? .null,
            "orphan_grace": orphanGrace.map { .double(Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18) } ?? .null,
        ]
        return Pool(handle: try await make(.pool, name, options))
    }
}

/// Python's `multiprocessing.Pool`, on a manager's worker nodes. Every method has an async
/// form and a blocking twin for plain threads. `close`, `join` and `terminate` act on the
/// jobs of this connection (a named pool is shared by many clients).
///
/// Unlike Python's Pool, a worker that dies does not hang the pool: its calls run again on
/// another worker (up to the pool's `max_attempts`, then `PoolError.workerLost` for that call
/// only), and the results of a client that crashed are dropped, not left to leak.
public struct Pool: Proxy {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }

    // MARK: apply

    /// Python `pool.apply(f, args)`: runs one call and returns its result (one request,
    /// answered when the call has run; cancelling the task cancels the call).
    public func apply<A, R>(_ task: PoolTask<A, R>, _ arguments: A) async throws -> R {
        let call = PoolCall.apply(task: task.name, arguments: [try wire(arguments)])
        return try handle.decode(R.self, try await Pool.submitting(task.name) { try await handle.wait(call) })
    }
    public func apply<A, R>(_ task: PoolTask<A, R>, _ arguments: A) throws -> R {
        let call = PoolCall.apply(task: task.name, arguments: [try wire(arguments)])
        return try handle.decode(R.self, try Pool.submitting(task.name) { try handle.runBlocking(call) })
    }

    /// Python `pool.apply_async(f, args, callback=, error_callback=)`. The callbacks run on
    /// a background task when the result arrives.
    public func applyAsync<A, R>(
        _ task: PoolTask<A, R>, _ arguments: A, callback: (@Sendable (R) -> Void)? = nil,
        errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) async throws -> AsyncResult<R> {
        try submit(task, arguments, callback: callback, errorCallback: errorCallback)
    }
    public func applyAsync<A, R>(
        _ task: PoolTask<A, R>, _ arguments: A, callback: (@Sendable (R) -> Void)? = nil,
        errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) throws -> AsyncResult<R> {
        try submit(task, arguments, callback: callback, errorCallback: errorCallback)
    }

    /// Submits without waiting for the manager (it never blocks): the outcome is pushed back
    /// through this connection's result router.
    private func submit<A, R>(
        _ task: PoolTask<A, R>, _ arguments: A, callback: (@Sendable (R) -> Void)?, errorCallback: (@Sendable (any Error) -> Void)?
    ) throws -> AsyncResult<R> {
        let future = Future<R>()
        let pool = self
        let router = handle.manager.connection.resultRouter(pool: reference.id)
        let job = router.submit(task: task.name, arguments: [try wire(arguments)]) { outcome in
            do {
                try future.setResult(try pool.decode(R.self, outcome, task: task.name))
            } catch {
                try? future.setException(error)
            }
        }
        return AsyncResult(pool: self, job: job, future: future, callback: callback, errorCallback: errorCallback)
    }

    // MARK: map

    /// Python `pool.map(f, iterable, chunksize)`: every result, in input order; throws the
    /// first call's error. `chunksize` nil is Python's automatic size.
    public func map<A, R>(_ task: PoolTask<A, R>, _ items: some Sequence<A>, chunksize: Int? = nil) async throws -> [R] {
        try await mapAsync(task, items, chunksize: chunksize).get()
    }
    public func map<A, R>(_ task: PoolTask<A, R>, _ items: some Sequence<A>, chunksize: Int? = nil) throws -> [R] {
        try mapAsync(task, items, chunksize: chunksize).get()
    }

    /// Python `pool.map_async(f, iterable, chunksize, callback, error_callback)`.
    public func mapAsync<A, R>(
        _ task: PoolTask<A, R>, _ items: some Sequence<A>, chunksize: Int? = nil, callback: (@Sendable ([R]) -> Void)? = nil,
        errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) async throws -> AsyncResult<[R]> {
        let job = try await sendMap(MapInput(task: task.name, calls: try Pool.calls(items), chunksize: chunksize, starred: false))
        return list(job, task, callback: callback, errorCallback: errorCallback)
    }
    public func mapAsync<A, R>(
        _ task: PoolTask<A, R>, _ items: some Sequence<A>, chunksize: Int? = nil, callback: (@Sendable ([R]) -> Void)? = nil,
        errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) throws -> AsyncResult<[R]> {
        let job = try sendMap(MapInput(task: task.name, calls: try Pool.calls(items), chunksize: chunksize, starred: false))
        return list(job, task, callback: callback, errorCallback: errorCallback)
    }

    /// Python `pool.starmap(f, [(a, b), ...])`: each item is a positional argument list. The
    /// task's `Arguments` decodes from the list as an array (an array type, or a `Codable`
    /// struct that reads an unkeyed container); a one-element list also decodes from its element.
    public func starmap<A, R>(_ task: PoolTask<A, R>, _ argumentLists: some Sequence<[any Encodable & Sendable]>, chunksize: Int? = nil)
        async throws -> [R]
    {
        try await starmapAsync(task, argumentLists, chunksize: chunksize).get()
    }
    public func starmap<A, R>(_ task: PoolTask<A, R>, _ argumentLists: some Sequence<[any Encodable & Sendable]>, chunksize: Int? = nil)
        throws -> [R]
    {
        try starmapAsync(task, argumentLists, chunksize: chunksize).get()
    }

    /// Python `pool.starmap_async(f, iterable, chunksize, callback, error_callback)`.
    public func starmapAsync<A, R>(
        _ task: PoolTask<A, R>, _ argumentLists: some Sequence<[any Encodable & Sendable]>, chunksize: Int? = nil,
        callback: (@Sendable ([R]) -> Void)? = nil, errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) async throws -> AsyncResult<[R]> {
        let job = try await sendMap(MapInput(task: task.name, calls: try Pool.argumentLists(argumentLists), chunksize: chunksize, starred: true))
        return list(job, task, callback: callback, errorCallback: errorCallback)
    }
    public func starmapAsync<A, R>(
        _ task: PoolTask<A, R>, _ argumentLists: some Sequence<[any Encodable & Sendable]>, chunksize: Int? = nil,
        callback: (@Sendable ([R]) -> Void)? = nil, errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) throws -> AsyncResult<[R]> {
        let job = try sendMap(MapInput(task: task.name, calls: try Pool.argumentLists(argumentLists), chunksize: chunksize, starred: true))
        return list(job, task, callback: callback, errorCallback: errorCallback)
    }

    /// A map's calls, encoded all at once, or a piece at a time as the requests leave (scalars,
    /// whose encoding cannot fail): the first piece is then on its way to the workers before
    /// the rest is encoded.
    struct MapCalls {
        let count: Int
        /// The calls at these positions, encoded.
        let encode: (Range<Int>) -> EncodedValues

        init(_ encoded: EncodedValues) {
            count = encoded.count
            encode = { encoded[$0] }
        }

        init(count: Int, encode: @escaping (Range<Int>) -> EncodedValues) {
            self.count = count
            self.encode = encode
        }
    }

    /// A map's whole input, sent as one request or, when long, as a streamed job whose first
    /// piece the workers start on while the rest follows in `feed`s.
    struct MapInput {
        let task: String
        let calls: MapCalls
        let chunksize: Int?
        let starred: Bool

        /// Calls in the first request and in each `feed` after it.
        static let piece = 16_384

        var isStreamed: Bool { calls.count > 2 * MapInput.piece }
        var requestCount: Int { isStreamed ? (calls.count + MapInput.piece - 1) / MapInput.piece : 1 }

        /// Request `index` (the map under `job`, an id this session chose, then its feeds) for
        /// the pool `pool`, encoded.
        func request(_ index: Int, job: UInt64, pool: UInt64) -> ByteBuffer {
            guard isStreamed else {
                return PoolCall.mapRequest(
                    pool: pool, task: task, calls: calls.encode(0..<calls.count), chunksize: chunksize, ordered: true, more: false,
                    starred: starred, job: job)
            }
            let start = index * MapInput.piece
            let end = Swift.min(start + MapInput.piece, calls.count)
            guard index > 0 else {
                return PoolCall.mapRequest(
                    pool: pool, task: task, calls: calls.encode(start..<end), chunksize: chunksize, ordered: true, more: true,
                    starred: starred, total: calls.count, job: job)
            }
            return PoolCall.feedRequest(pool: pool, job: job, calls: calls.encode(start..<end), last: end == calls.count)
        }

        /// Requests sent before their answers are awaited (well inside the session's `max_in_flight`).
        static let window = 64

        /// The requests by index, in rounds of windows: a round's windows leave one after the
        /// other and its answers are awaited before the next round. The first round is the map
        /// alone, which leaves before the next pieces are encoded, and the 63 requests right
        /// behind it; then a window of 64 per round.
        func rounds() -> [[Range<Int>]] {
            var rounds = [[0..<1]]
            var start = 1
            while start < requestCount {
                let end = Swift.min(start + (start == 1 ? MapInput.window - 1 : MapInput.window), requestCount)
                if start == 1 { rounds[0].append(start..<end) } else { rounds.append([start..<end]) }
                start = end
            }
            return rounds
        }

        /// The first failure among the answers to requests `sent` onwards, and whether the job
        /// exists (the map itself was accepted), so that it must be cancelled.
        static func failure(in answers: [Result<WireValue, any Error>], sent: Int) -> (error: any Error, jobExists: Bool)? {
            for (offset, answer) in answers.enumerated() {
                if case .failure(let error) = answer { return (error, sent + offset > 0) }
            }
            return nil
        }
    }

    /// Sends a map and its feeds one after another without waiting between them (a session's
    /// requests run in order), so the workers start on the first piece while the rest is on
    /// its way. A feed that fails cancels the job (its input could never end).
    private func sendMap(_ input: MapInput) async throws -> UInt64 {
        let job = handle.manager.connection.resultRouter(pool: reference.id).chooseJob()
        for round in input.rounds() {
            for (sent, answers) in round.map({ ($0.lowerBound, start($0, of: input, job: job)) }) {
                guard let (error, jobExists) = MapInput.failure(in: try await answers.get(), sent: sent) else { continue }
                if jobExists { _ = try? await handle.run(PoolCall.cancel(job: job)) }
                try Pool.submitting(input.task) { throw error }
            }
        }
        return job
    }
    private func sendMap(_ input: MapInput) throws -> UInt64 {
        try handle.manager.connection.checkNotOnEventLoop()
        let job = handle.manager.connection.resultRouter(pool: reference.id).chooseJob()
        for round in input.rounds() {
            for (sent, answers) in round.map({ ($0.lowerBound, start($0, of: input, job: job)) }) {
                guard let (error, jobExists) = MapInput.failure(in: try answers.wait(), sent: sent) else { continue }
                if jobExists { _ = try? handle.runBlocking(PoolCall.cancel(job: job)) }
                try Pool.submitting(input.task) { throw error }
            }
        }
        return job
    }

    /// Encodes the requests of `window` and sends them.
    private func start(_ window: Range<Int>, of input: MapInput, job: UInt64) -> EventLoopFuture<[Result<WireValue, any Error>]> {
        handle.manager.connection.startAll(encoded: window.map { input.request($0, job: job, pool: reference.id) })
    }

    private static func argumentLists(_ lists: some Sequence<[any Encodable & Sendable]>) throws -> MapCalls {
        MapCalls(EncodedValues(try lists.map { list in .array(try list.map { try WireValueEncoder().encode($0) }) }))
    }

    // MARK: imap

    /// Python `pool.imap(f, iterable, chunksize=1)`: results in input order as they come.
    /// The input is read lazily and sent in windows, so neither side holds all of a long
    /// iterable. Iterate with `for try await` or, on a plain thread, `next(timeout:)`.
    public func imap<A, R>(_ task: PoolTask<A, R>, _ items: some Sequence<A> & Sendable, chunksize: Int = 1) throws -> PoolIterator<R> {
        try PoolIterator(pool: self, task: task.name, items: items.lazy.map { try wire($0) }, chunksize: chunksize, ordered: true)
    }

    /// Python `pool.imap_unordered(f, iterable, chunksize=1)`: results in the order calls finish.
    public func imapUnordered<A, R>(_ task: PoolTask<A, R>, _ items: some Sequence<A> & Sendable, chunksize: Int = 1) throws
        -> PoolIterator<R>
    {
        try PoolIterator(pool: self, task: task.name, items: items.lazy.map { try wire($0) }, chunksize: chunksize, ordered: false)
    }

    // MARK: Adopting a crashed client's jobs

    /// Beyond Python: takes over a call that a client submitted before it crashed (its
    /// results wait on the manager for the pool's `orphanGrace`). `jobID` is the crashed
    /// client's `AsyncResult.jobID`, saved where this program can find it.
    public func adopt<A, R>(_ jobID: UInt64, of task: PoolTask<A, R>) async throws -> AsyncResult<R> {
        try await Pool.submitting(task.name) { try await handle.run(PoolCall.adopt(job: jobID)) }
        return single(jobID, task, callback: nil, errorCallback: nil)
    }

    /// The same for a crashed client's `mapAsync` or `starmapAsync`.
    public func adoptMap<A, R>(_ jobID: UInt64, of task: PoolTask<A, R>) async throws -> AsyncResult<[R]> {
        try await Pool.submitting(task.name) { try await handle.run(PoolCall.adopt(job: jobID)) }
        return list(jobID, task, callback: nil, errorCallback: nil)
    }

    // MARK: Lifetime

    /// Python `pool.close()`: this connection submits no more work to the pool.
    public func close() async throws { try await handle.run(PoolCall.close()) }
    public func close() throws { try handle.runBlocking(PoolCall.close()) }

    /// Python `pool.terminate()`: closes, and stops this connection's unfinished calls
    /// (running ones are stopped on their workers; their results are `CancelledError`).
    public func terminate() async throws { try await handle.run(PoolCall.terminate()) }
    public func terminate() throws { try handle.runBlocking(PoolCall.terminate()) }

    /// Python `pool.join()`: waits until every call this connection submitted has finished.
    /// Call `close()` or `terminate()` first. Returns false if `timeout` passed first.
    @discardableResult
    public func join(timeout: Double? = nil) async throws -> Bool { try await handle.wait(PoolCall.join(timeout: timeout)) }
    @discardableResult
    public func join(timeout: Double? = nil) throws -> Bool { try handle.runBlocking(PoolCall.join(timeout: timeout)) }

    /// The worker nodes serving the pool now.
    public func workers() async throws -> [PoolWorkerInfo] { try await handle.run(PoolCall.workers()).map(Pool.workerInfo) }
    public func workers() throws -> [PoolWorkerInfo] { try handle.runBlocking(PoolCall.workers()).map(Pool.workerInfo) }

    static func workerInfo(_ row: WireValue) -> PoolWorkerInfo {
        func int(_ key: String) -> Int { row[key]?.int64Value.flatMap(Int.init(exactly:)) ?? 0 }
        return PoolWorkerInfo(
            node: row["node"]?.stringValue ?? "?", pid: int("pid"), processes: int("processes"), capacity: int("capacity"),
            busy: int("busy"), tasks: (row["tasks"]?.arrayValue ?? []).compactMap(\.stringValue), draining: row["draining"]?.boolValue ?? false,
            done: int("done"))
    }

    /// The AsyncResult of one submitted call.
    private func single<A, R>(
        _ job: UInt64, _ task: PoolTask<A, R>, callback: (@Sendable (R) -> Void)?, errorCallback: (@Sendable (any Error) -> Void)?
    ) -> AsyncResult<R> {
        let pool = self
        return AsyncResult(pool: self, job: job, fetch: {
            let answer: Result<WireValue, any Error>
            do { answer = .success(try await pool.handle.run(PoolCall.result(job: job))) } catch { answer = .failure(error) }
            return try pool.decode(R.self, answer, task: task.name)
        }, callback: callback, errorCallback: errorCallback)
    }

    /// The AsyncResult of a map: every value in input order, or the first call's error.
    private func list<A, R>(
        _ job: UInt64, _ task: PoolTask<A, R>, callback: (@Sendable ([R]) -> Void)?, errorCallback: (@Sendable (any Error) -> Void)?
    ) -> AsyncResult<[R]> {
        let pool = self
        return AsyncResult(pool: self, job: job, fetch: {
            // Each batch is decoded as it comes, while the workers run the rest.
            var results: [R] = []
            while true {
                let batch = try await pool.handle.run(PoolCall.next(job: job))
                if let (_, error) = batch.failures.first { throw PoolError.from(error, task: task.name) }
                if results.isEmpty {
                    results = try pool.decodeAll(R.self, batch.values)
                    if let total = batch.total { results.reserveCapacity(total) }
                } else {
                    results += try pool.decodeAll(R.self, batch.values)
                }
                if batch.finished { break }
            }
            return results
        }, callback: callback, errorCallback: errorCallback)
    }

    /// A map's calls, one argument each, encoded. The common scalars skip the encoder and
    /// `WireValue` (a map of 100,000 integers spent most of its client time there).
    static func calls<A: Encodable>(_ items: some Sequence<A>) throws -> MapCalls {
        // Ranges first: iterating one through this unspecialized generic costs more than the
        // rest of the call together.
        if let range = items as? Range<Int> {
            return MapCalls(count: range.count) { EncodedValues(integers: range.lowerBound + $0.lowerBound ..< range.lowerBound + $0.upperBound) }
        }
        if let range = items as? ClosedRange<Int> { return integers(Array(range)) }
        let array = Array(items)
        switch array {
        case let numbers as [Int]: return integers(numbers)
        case let texts as [String]: return MapCalls(count: texts.count) { EncodedValues(strings: texts[$0]) }
        case let numbers as [Double]: return MapCalls(count: numbers.count) { EncodedValues(doubles: numbers[$0]) }
        default:
            let encoder = WireValueEncoder()
            return MapCalls(EncodedValues(try array.map { try encoder.encode($0) }))
        }
    }

    private static func integers(_ numbers: [Int]) -> MapCalls {
        MapCalls(count: numbers.count) { EncodedValues(integers: numbers[$0]) }
    }

    /// Results as `R`: the common scalars straight from their bytes, others element by element.
    func decodeAll<R: Decodable>(_ type: R.Type, _ values: EncodedValues) throws -> [R] {
        // With R == Int the bits of `[Int]` and `[R]` are the same (`as!` would cast each).
        if R.self == Int.self, let numbers = values.integers() { return unsafeBitCast(numbers, to: [R].self) }
        if R.self == String.self, let texts = values.strings() { return unsafeBitCast(texts, to: [R].self) }
        if R.self == Double.self, let numbers = values.doubles() { return unsafeBitCast(numbers, to: [R].self) }
        return try (0..<values.count).map { try handle.decode(R.self, values[$0]) }
    }

    /// Runs a submission; the manager's refusals that concern the task (NoSuchTask) arrive as
    /// `PoolError`, as its calls' own failures do.
    static func submitting<T>(_ task: String, _ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as RemoteError { throw PoolError.from(error, task: task) }
    }
    static func submitting<T>(_ task: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as RemoteError { throw PoolError.from(error, task: task) }
    }

    /// A call's outcome as `R`; the manager's errors about it as `PoolError` (or the local
    /// error Python would raise), transport errors as they are.
    func decode<R: Decodable, Failure: Error>(_ type: R.Type, _ outcome: Result<WireValue, Failure>, task: String) throws -> R {
        switch outcome {
        case .success(let value): return try handle.decode(R.self, value)
        case .failure(let error as RemoteError): throw PoolError.from(error, task: task)
        case .failure(let error): throw error
        }
    }
}

/// Python's `AsyncResult` (what `applyAsync` and `mapAsync` return). The result is fetched
/// once, in the background, as soon as the call is submitted: the manager sends it when it is
/// ready, and every `get` after that answers locally.
public final class AsyncResult<Value: Sendable>: @unchecked Sendable {
    private let pool: Pool
    /// The job's id on the manager: what `Pool.adopt` takes if this client crashes.
    public let jobID: UInt64
    private let future: Future<Value>

    /// `future` is completed by whoever brings the outcome. Callbacks run on a task of their
    /// own, never on the connection's event loop.
    init(
        pool: Pool, job: UInt64, future: Future<Value>, callback: (@Sendable (Value) -> Void)?,
        errorCallback: (@Sendable (any Error) -> Void)?
    ) {
        self.pool = pool
        jobID = job
        self.future = future
        if callback != nil || errorCallback != nil {
            future.addDoneCallback { future in
                Task {
                    do { callback?(try future.result(timeout: 0)) } catch { errorCallback?(error) }
                }
            }
        }
    }

    /// `fetch` waits on the manager for the job's outcome and decodes it.
    convenience init(
        pool: Pool, job: UInt64, fetch: @escaping @Sendable () async throws -> Value, callback: (@Sendable (Value) -> Void)?,
        errorCallback: (@Sendable (any Error) -> Void)?
    ) {
        self.init(pool: pool, job: job, future: Future(), callback: callback, errorCallback: errorCallback)
        let future = self.future
        Task {
            do {
                try future.setResult(try await fetch())
            } catch {
                try? future.setException(error)
            }
        }
    }

    /// Python `r.get(timeout)`: the result, or the call's error; `TimeoutError` if it is not
    /// ready within `timeout` seconds (the call goes on; get it later).
    public func get(timeout: Double? = nil) async throws -> Value {
        guard let timeout else { return try await future.value }
        let future = self.future
        let outcome: Result<Value, any Error> = await withCheckedContinuation { continuation in
            // Whichever comes first, the outcome or the timeout, resumes; the other finds the
            // continuation taken.
            let once = ResumeOnce(continuation)
            let timer = Task {
                try? await Task.sleep(for: .seconds(max(0, timeout)))
                once.resume(.failure(TimeoutError()))
            }
            future.addDoneCallback { done in
                once.resume(Result { try done.result(timeout: 0) })
                timer.cancel()
            }
        }
        return try outcome.get()
    }
    public func get(timeout: Double? = nil) throws -> Value { try future.result(timeout: timeout) }

    /// Python `r.wait(timeout)`: waits until the result is ready (true) or the timeout passes.
    @discardableResult
    public func wait(timeout: Double? = nil) async -> Bool {
        (try? await get(timeout: timeout)) != nil || future.isDone
    }
    @discardableResult
    public func wait(timeout: Double? = nil) -> Bool {
        _ = try? future.exception(timeout: timeout)
        return future.isDone
    }

    /// Python `r.ready()`.
    public var isReady: Bool { future.isDone }

    /// Python `r.successful()`: whether the call finished without error; while it runs,
    /// `ThreadingError` `.invalidArgument` (Python's ValueError).
    public func successful() throws -> Bool {
        guard future.isDone else { throw ThreadingError(.invalidArgument, "the result is not ready; wait for it first (Python raises ValueError)") }
        return (try? future.exception(timeout: 0)) == nil
    }

    /// Beyond Python: cancels the call on the manager if it has not finished (queued calls
    /// are dropped, running ones stopped). Returns whether it was cancelled.
    public func cancel() async throws -> Bool { try await pool.handle.run(PoolCall.cancel(job: jobID)) }
}

/// The iterator `imap` and `imapUnordered` return (Python's `IMapIterator`): results as they
/// come, a call's error thrown at its place (iteration may go on after it), and `progress`.
/// Use it from one task or thread at a time.
public final class PoolIterator<Element: Codable & Sendable>: AsyncSequence, AsyncIteratorProtocol, @unchecked Sendable {
    private let pool: Pool
    private let task: String
    /// The job on the manager: the first window is sent when the iterator is made, without
    /// waiting (as Python's imap; the workers start at once), and its answer is awaited at the
    /// first `next`.
    private var job: UInt64?
    private let submitted = Future<UInt64>()
    private var input: AnyIterator<WireValue>
    private var inputDone = false
    private var sent = 0
    private var received = 0
    private var finished = false
    private var buffer: [Result<WireValue, RemoteError>] = []
    private var bufferIndex = 0
    private let window: Int
    /// Calls finished so far, and the number of calls once the input has been read to its end.
    public private(set) var progress: (completed: Int, total: Int?) = (0, nil)

    init(pool: Pool, task: String, items: some Sequence<WireValue>, chunksize: Int, ordered: Bool) throws {
        guard chunksize >= 1 else { throw ThreadingError(.invalidArgument, "chunksize must be at least 1, not \(chunksize)") }
        self.pool = pool
        self.task = task
        var iterator = items.makeIterator()
        input = AnyIterator { iterator.next() }
        // Enough calls in flight to keep every worker busy; the manager holds no more.
        window = Swift.max(1024, chunksize * 256)
        let first = Self.read(&input, count: window)
        inputDone = first.count < window
        sent = first.count
        let call = PoolCall.map(task: task, calls: first, chunksize: chunksize, ordered: ordered, more: !inputDone)
        let submitted = self.submitted
        pool.handle.manager.connection.send(call.request(object: pool.reference.id)) { answer in
            do {
                try submitted.setResult(try Pool.submitting(task) { try call.decode(try answer.get()) })
            } catch {
                try? submitted.setException(error)
            }
        }
    }

    private static func read(_ input: inout AnyIterator<WireValue>, count: Int) -> [WireValue] {
        var values: [WireValue] = []
        while values.count < count, let value = input.next() { values.append(value) }
        return values
    }

    public func makeAsyncIterator() -> PoolIterator<Element> { self }

    /// The next window of input, once half the last one has come back.
    private func refill(_ job: UInt64) -> ObjectCall<Void>? {
        guard !inputDone, sent - received <= window / 2 else { return nil }
        let more = Self.read(&input, count: window / 2)
        inputDone = more.count < window / 2
        sent += more.count
        return PoolCall.feed(job: job, calls: more, last: inputDone)
    }

    private func take(_ batch: PoolBatch) {
        buffer = batch.outcomes
        bufferIndex = 0
        received += buffer.count
        finished = batch.finished
        progress = (batch.completed, batch.total)
    }

    private func pop() throws -> Element? {
        guard bufferIndex < buffer.count else { return nil }
        let outcome = buffer[bufferIndex]
        bufferIndex += 1
        return try pool.decode(Element.self, outcome, task: task)
    }

    /// The next result in async code; nil at the end.
    public func next() async throws -> Element? {
        while true {
            if bufferIndex < buffer.count { return try pop() }
            if finished { return nil }
            let job: UInt64
            if let known = self.job { job = known } else { job = try await submitted.value }
            self.job = job
            if let feed = refill(job) { try await pool.handle.run(feed) }
            take(try await pool.handle.wait(PoolCall.next(job: job)))
        }
    }

    /// Python `it.next(timeout)` on a plain thread: the next result, nil at the end;
    /// `TimeoutError` if none arrives within `timeout` seconds.
    public func next(timeout: Double? = nil) throws -> Element? {
        while true {
            if bufferIndex < buffer.count { return try pop() }
            if finished { return nil }
            try pool.handle.manager.connection.checkNotOnEventLoop()
            let job = try self.job ?? submitted.result(timeout: timeout)
            self.job = job
            if let feed = refill(job) { try pool.handle.runBlocking(feed) }
            take(try pool.handle.runBlocking(PoolCall.next(job: job, timeout: timeout)))
        }
    }

    /// Every remaining result, in the iterator's order (throws the first error).
    public func collect() async throws -> [Element] {
        var results: [Element] = []
        while let element = try await next() { results.append(element) }
        return results
    }
}

/// Resumes a continuation at most once, from whichever side gets there first.
private final class ResumeOnce<Value: Sendable>: @unchecked Sendable {
    private let lock = Threading.Lock()
    private var continuation: CheckedContinuation<Result<Value, any Error>, Never>?

    init(_ continuation: CheckedContinuation<Result<Value, any Error>, Never>) { self.continuation = continuation }

    func resume(_ outcome: Result<Value, any Error>) {
        let taken: CheckedContinuation<Result<Value, any Error>, Never>? = lock.withLock {
            defer { continuation = nil }
            return continuation
        }
        taken?.resume(returning: outcome)
    }
}
