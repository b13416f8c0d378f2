import ColonyPool
import ColonyWire

/// The scheduler's inputs as plain values, so that tests read as the calls and results they
/// mean; the scheduler itself takes them encoded.
extension PoolScheduler {
    mutating func submit(
        client: PoolClientID, task: String, calls: [WireValue], starred: Bool = false, chunksize: Int?, ordered: Bool, moreInput: Bool = false,
        total: Int? = nil, id: PoolJobID? = nil
    ) throws(RemoteError) -> (PoolJobID, [PoolAction]) {
        try submit(
            client: client, task: task, calls: EncodedValues(calls), starred: starred, chunksize: chunksize, ordered: ordered, moreInput: moreInput,
            total: total, id: id)
    }

    mutating func feed(_ id: PoolJobID, calls: [WireValue], last: Bool) throws(RemoteError) -> [PoolAction] {
        try feed(id, calls: EncodedValues(calls), last: last)
    }

    mutating func completed(_ assignment: PoolAssignmentID, by worker: PoolWorkerID, results: [WireValue]) throws(RemoteError) -> [PoolAction] {
        try completed(assignment, by: worker, results: EncodedValues(results))
    }

    mutating func failed(_ assignment: PoolAssignmentID, by worker: PoolWorkerID, index: Int, results: [WireValue], error: RemoteError)
        throws(RemoteError) -> [PoolAction]
    {
        try failed(assignment, by: worker, index: index, results: EncodedValues(results), error: error)
    }

    mutating func lost(_ assignment: PoolAssignmentID, by worker: PoolWorkerID, index: Int, results: [WireValue]) throws(RemoteError) -> [PoolAction] {
        try lost(assignment, by: worker, index: index, results: EncodedValues(results))
    }
}
