import ColonyWire
import Threading

/// Brings the outcomes of a connection's `applyAsync` calls home, as Python's Pool result
/// handler thread does: each call is submitted under a job id this side chooses, without
/// waiting for an answer, and one `results` request at a time stays parked on the manager,
/// which answers it with every outcome that finished since. So a burst of `applyAsync` costs
/// one write, and its outcomes come back in batches.
final class PoolResultRouter: @unchecked Sendable {
    private unowned let connection: ManagerConnection
    private let pool: UInt64
    private let session: UInt64
    private let lock = Threading.Lock()
    // Guarded by lock.
    private var waiting: [UInt64: @Sendable (Result<WireValue, any Error>) -> Void] = [:]
    private var counter: UInt32 = 0
    private var polling = false

    init(connection: ManagerConnection, pool: UInt64, session: UInt64) {
        self.connection = connection
        self.pool = pool
        self.session = session
    }

    /// Submits one call; `deliver` gets its outcome (on the connection's event loop).
    func submit(task: String, arguments: [WireValue], deliver: @escaping @Sendable (Result<WireValue, any Error>) -> Void) -> UInt64 {
        let (job, startPolling): (UInt64, Bool) = lock.withLock {
            let job = nextJob()
            waiting[job] = deliver
            defer { polling = true }
            return (job, !polling)
        }
        let request = PoolCall.submit(task: task, arguments: arguments, job: job).request(object: pool)
        connection.send(request) { [self] answer in
            if case .failure(let error) = answer { route(job, .failure(error)) }
        }
        if startPolling { poll() }
        return job
    }

    /// A fresh job id of this session for this pool (a `map` that feeds its input at once).
    func chooseJob() -> UInt64 { lock.withLock { nextJob() } }

    /// Under `lock`.
    private func nextJob() -> UInt64 {
        counter &+= 1
        if counter == 0 { counter = 1 }
        return session << 32 | UInt64(counter)
    }

    private func poll() {
        connection.send(PoolCall.results().request(object: pool)) { [self] answer in
            switch answer {
            case .success(let value):
                var outcomes: [(job: UInt64, ok: Bool, value: WireValue)] = []
                for entry in value.arrayValue ?? [] {
                    guard let fields = entry.arrayValue, fields.count == 3, let job = fields[0].uint64Value, let ok = fields[1].boolValue else { continue }
                    outcomes.append((job, ok, fields[2]))
                }
                let (delivers, more) = lock.withLock {
                    let delivers = outcomes.map { waiting.removeValue(forKey: $0.job) }
                    polling = !waiting.isEmpty
                    return (delivers, polling)
                }
                for (outcome, deliver) in zip(outcomes, delivers) {
                    guard let deliver else { continue }
                    if outcome.ok {
                        deliver(.success(outcome.value))
                    } else {
                        deliver(.failure((try? RemoteError(wireValue: outcome.value)) ?? RemoteError(.internalError, "a malformed error in pushed results")))
                    }
                }
                if more { poll() }
            case .failure(let error):
                let everyone = lock.withLock {
                    defer {
                        waiting = [:]
                        polling = false
                    }
                    return waiting
                }
                for deliver in everyone.values { deliver(.failure(error)) }
            }
        }
    }

    private func route(_ job: UInt64, _ outcome: Result<WireValue, any Error>) {
        let deliver = lock.withLock { waiting.removeValue(forKey: job) }
        deliver?(outcome)
    }
}
