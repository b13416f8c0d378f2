import Foundation
import Atomics
import Glibc
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

@testable import ColonyTransport

@Suite struct BusyPollBackoffTests {
    @Test func pollsWhileItsPollsEndInAReply() {
        var backoff = BusyPollBackoff()
        for _ in 0..<10 {
            let polls = backoff.shouldPoll()
            #expect(polls)
            backoff.record(hit: true)
        }
        #expect(backoff.misses == 0)
    }

    @Test func eachMissDoublesTheChancesSkippedUpToSixtyThree() {
        var backoff = BusyPollBackoff()
        var skippedAfterEachMiss: [Int] = []
        for _ in 0..<8 {
            let polls = backoff.shouldPoll()
            #expect(polls)
            backoff.record(hit: false)
            var skipped = 0
            while !backoff.shouldPoll() { skipped += 1 }
            skippedAfterEachMiss.append(skipped)
            // shouldPoll said yes: that chance is the next poll.
        }
        #expect(skippedAfterEachMiss == [1, 3, 7, 15, 31, 63, 63, 63])
    }

    @Test func aHitEndsTheBackOff() {
        var backoff = BusyPollBackoff()
        backoff.record(hit: false)
        backoff.record(hit: false)
        while !backoff.shouldPoll() {}
        backoff.record(hit: true)
        #expect(backoff.misses == 0)
        let polls = backoff.shouldPoll()
        #expect(polls)
    }
}

@Suite struct CPUContentionTests {
    let ms: UInt64 = 1_000_000

    @Test func crowdedWhenTheThreadWaitedMoreThanAnEighthOfTheWindow() {
        var contention = CPUContention()
        #expect(contention.isDue(at: 0))
        contention.record(at: 0, waited: 500 * ms)
        #expect(!contention.isCrowded)  // one sample says nothing yet
        #expect(!contention.isDue(at: 9 * ms))
        #expect(contention.isDue(at: 10 * ms))
        contention.record(at: 10 * ms, waited: 500 * ms + ms)  // waited 10%
        #expect(!contention.isCrowded)
        contention.record(at: 20 * ms, waited: 501 * ms + 2 * ms)  // waited 20%
        #expect(contention.isCrowded)
        contention.record(at: 30 * ms, waited: 503 * ms)  // did not wait
        #expect(!contention.isCrowded)
    }

    @Test func neverCrowdedWhereTheKernelDoesNotSay() {
        var contention = CPUContention()
        contention.record(at: 0, waited: 0)
        contention.record(at: 10 * ms, waited: 5 * ms)
        #expect(contention.isCrowded)
        contention.record(at: 20 * ms, waited: nil)
        #expect(!contention.isCrowded)
        #expect(contention.isDue(at: 20 * ms))
    }

    @Test func thisThreadsWaitIsReadable() {
        // Linux keeps it in /proc/thread-self/schedstat; nil would turn the rule off.
        #expect(colonyThreadCPUWait() != nil)
    }
}

/// A connected loopback pair on one event loop: the accepted side and the connecting side.
private struct LoopbackPair {
    let group: MultiThreadedEventLoopGroup
    let server: any Channel
    let accepted: any Channel
    let client: any Channel

    /// Over TCP on 127.0.0.1, or over a Unix domain socket at `unixSocketPath`.
    static func make(unixSocketPath: String? = nil) async throws -> LoopbackPair {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let acceptedPromise = group.next().makePromise(of: (any Channel).self)
        let bootstrap = ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                acceptedPromise.succeed(channel)
                return channel.eventLoop.makeSucceededVoidFuture()
            }
        let server =
            if let unixSocketPath {
                try await bootstrap.bind(unixDomainSocketPath: unixSocketPath, cleanupExistingSocketFile: true).get()
            } else {
                try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
            }
        // The client reads nothing by itself, so bytes sent to it stay readable.
        let client = try await ClientBootstrap(group: group).channelOption(.autoRead, value: false)
            .connect(to: server.localAddress!).get()
        let accepted = try await acceptedPromise.futureResult.get()
        return LoopbackPair(group: group, server: server, accepted: accepted, client: client)
    }

    func close() async throws {
        try? await client.close()
        try? await server.close()
        try await group.shutdownGracefully()
    }
}

/// Each test would outlive its time limit if a poll did not stop when it should.
@Suite(.serialized, .timeLimit(.minutes(1))) struct BusyPollerTests {
    static let longerThanTheTimeLimit: UInt64 = 120_000_000_000

    @Test func findsTheSocketOfBothEndsOfAConnection() async throws {
        let pair = try await LoopbackPair.make()
        for channel in [pair.client, pair.accepted] {
            let descriptor = try #require(BusyPoller.socketDescriptor(of: channel))
            var address = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let named = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
            }
            #expect(named == 0)
            #expect(Int(UInt16(bigEndian: address.sin_port)) == channel.localAddress?.port)
        }
        try await pair.close()
    }

    @Test func findsTheSocketOfBothEndsOfAUnixDomainConnection() async throws {
        let path = NSTemporaryDirectory() + "colony-poll-\(UUID().uuidString.prefix(8)).sock"
        let pair = try await LoopbackPair.make(unixSocketPath: path)
        defer { unlink(path) }
        for channel in [pair.client, pair.accepted] {
            let descriptor = try #require(BusyPoller.socketDescriptor(of: channel), "busy polling needs the socket of \(channel)")
            var type: CInt = 0
            var length = socklen_t(MemoryLayout<CInt>.size)
            #expect(getsockopt(descriptor, SOL_SOCKET, SO_DOMAIN, &type, &length) == 0 && type == AF_UNIX)
        }
        try await pair.close()
    }

    @Test func findsNoSocketForAChannelWithoutOne() throws {
        let channel = EmbeddedChannel()
        #expect(BusyPoller.socketDescriptor(of: channel) == nil)
        _ = try channel.finish()
    }

    @Test func oneEventLoopHasOnePoller() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let loops = Array(group.makeIterator())
        let first = BusyPoller.shared(by: loops[0])
        #expect(BusyPoller.shared(by: loops[0]) === first)
        #expect(BusyPoller.shared(by: loops[1]) !== first)
        try await group.shutdownGracefully()
    }

    /// Runs `body` on the poller's event loop and returns what it returns.
    private func onLoop<T: Sendable>(_ poller: BusyPoller, _ body: @escaping @Sendable () -> T) async throws -> T {
        try await poller.eventLoop.submit(body).get()
    }

    /// Runs `body` with a loopback pair whose client end its event loop's poller watches.
    private func withWatchedClient(_ body: (LoopbackPair, BusyPoller) async throws -> Void) async throws {
        let pair = try await LoopbackPair.make()
        let poller = BusyPoller.shared(by: pair.client.eventLoop)
        #expect(try await onLoop(poller) { poller.watch(pair.client) })
        try await body(pair, poller)
        try await onLoop(poller) { poller.unwatch() }
        try await pair.close()
    }

    @Test(.enabled(if: BusyPoller.hasSeveralCPUs, "with one CPU a poller never polls"))
    func aPollThatRunsOutItsBudgetBacksOff() async throws {
        try await withWatchedClient { _, poller in
            // Nothing arrives: the poll runs out its millisecond, and the next chance is skipped.
            try await onLoop(poller) { poller.pollSoon(budget: 1_000_000) }
            #expect(try await onLoop(poller) { poller.backoffState.misses } == 1)
            #expect(try await onLoop(poller) { poller.backoffState.skipping } == 1)
            try await onLoop(poller) { poller.pollSoon(budget: BusyPollerTests.longerThanTheTimeLimit) }
            var expected = BusyPoller.Statistics()
            expected.timedOut = 1
            expected.skipped = 1
            #expect(poller.statistics == expected)
        }
    }

    @Test(.enabled(if: BusyPoller.hasSeveralCPUs, "with one CPU a poller never polls"))
    func aReadableSocketEndsThePoll() async throws {
        try await withWatchedClient { pair, poller in
            // The peer's bytes are there: a poll with a long budget ends at once, counted as a reply.
            try await pair.accepted.writeAndFlush(ByteBuffer(string: "answer"))
            try await onLoop(poller) { poller.pollSoon(budget: BusyPollerTests.longerThanTheTimeLimit) }
            #expect(try await onLoop(poller) { poller.backoffState.misses } == 0)
            #expect(poller.statistics.endedByWork == 1)
        }
    }

    @Test func workHandedOverEndsThePoll() async throws {
        try await withWatchedClient { pair, poller in
            let handedOver = pair.client.eventLoop.makePromise(of: Void.self)
            // A poll with a long budget; work handed over from this thread must stop it. Nothing
            // here waits on the loop before the hand-over: that wait would queue behind the poll.
            let pollQueued = ManagedAtomic(false)
            pair.client.eventLoop.execute {
                poller.pollSoon(budget: BusyPollerTests.longerThanTheTimeLimit)
                pollQueued.store(true, ordering: .releasing)
            }
            while !pollQueued.load(ordering: .acquiring) { sched_yield() }
            poller.execute { handedOver.succeed() }
            try await handedOver.futureResult.get()
            #expect(try await onLoop(poller) { poller.backoffState.misses } == 0)
        }
    }

    @Test func aPollerWithNothingWatchedNeverPolls() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let poller = BusyPoller.shared(by: group.next())
        try await onLoop(poller) { poller.pollSoon(budget: BusyPollerTests.longerThanTheTimeLimit) }
        // Had it polled, this would wait past the time limit (nothing is watched).
        try await onLoop(poller) {}
        try await group.shutdownGracefully()
    }
}
