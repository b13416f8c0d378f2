// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Colony",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Colony", targets: ["Colony"]),
        // The wire protocol alone, for other clients and for the fuzz harness.
        .library(name: "ColonyWire", targets: ["ColonyWire"]),
        // The manager's logic without its sockets, for embedding and for the fuzz harness.
        .library(name: "ColonyServer", targets: ["ColonyServer"]),
        .executable(name: "colony", targets: ["colony"]),
        .executable(name: "colony-bench", targets: ["colony-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // Only what Swift cannot call directly: futex(2), mremap(2), pidfd_open(2), prctl(2)
        // (variadic in C), epoll(7) (not in Swift's Glibc module).
        .target(name: "CMemoryMapShim"),
        // The local thread core: threads, locks, conditions, events, semaphores, timers,
        // barriers, thread-locals, queues, executors and futures.
        .target(
            name: "Threading",
            dependencies: [
                "CMemoryMapShim",
                .product(name: "Atomics", package: "swift-atomics"),
            ]
        ),
        // Memory maps, shared memory, process-shared locks, the shared-memory queue, and child
        // processes: the part of the local core that lets processes on one node cooperate.
        .target(
            name: "MemoryMap",
            dependencies: [
                "CMemoryMapShim", "Threading", "ColonyWire",
                .product(name: "Atomics", package: "swift-atomics"),
            ]
        ),
        // The wire protocol as pure code: values, MessagePack, frames, the handshake state
        // machines, messages. No sockets.
        .target(
            name: "ColonyWire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The pool's scheduler as a pure state machine: jobs, chunks, workers, attempts,
        // result order. No I/O; the manager hosts it for remote worker nodes.
        .target(name: "ColonyPool", dependencies: ["ColonyWire"]),
        // What the client and the manager share on top of NIO: busy polling of their
        // connections.
        .target(
            name: "ColonyTransport",
            dependencies: [
                "CMemoryMapShim",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The manager: object store, sessions, and the NIO listener around them.
        .target(
            name: "ColonyServer",
            dependencies: [
                "ColonyWire", "ColonyTransport", "ColonyPool", "Threading",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // Seeing what the manager does: its HTTP listener (`--http-listen`: the live dashboard,
        // the status as JSON, Prometheus metrics) and JSON log lines.
        .target(
            name: "ColonyObservability",
            dependencies: [
                "ColonyServer", "ColonyWire",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The client library users import; re-exports the local core and the wire values.
        .target(
            name: "Colony",
            dependencies: [
                "Threading", "ColonyWire", "ColonyTransport", "MemoryMap", "CMemoryMapShim",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // The worker runtime: task registry, stock tasks, a node's connection and its worker
        // threads or processes. `colony worker` and users' own worker programs run it.
        .target(
            name: "ColonyWorker",
            dependencies: [
                "CMemoryMapShim", "Colony", "ColonyWire", "ColonyTransport", "Threading", "MemoryMap",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(
            name: "colony",
            dependencies: [
                "CMemoryMapShim", "Colony", "ColonyServer", "ColonyWorker", "ColonyObservability",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "colony-bench",
            dependencies: [
                "Colony", "ColonyServer", "ColonyObservability", "ColonyWire", "ColonyPool", "CMemoryMapShim",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The chapter's example programs, written with Colony; tests run them and check their output.
        .executableTarget(name: "colony-examples", dependencies: ["Colony", "ColonyWorker"]),
        .testTarget(name: "ThreadingTests", dependencies: ["Threading"]),
        .testTarget(name: "MemoryMapTests", dependencies: ["MemoryMap", "Threading", "ColonyWire"]),
        .testTarget(
            name: "ColonyTransportTests",
            dependencies: [
                "ColonyTransport",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "ColonyServerTests",
            dependencies: [
                "ColonyServer", "ColonyWire", "ColonyTransport", "Threading",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]),
        .testTarget(name: "ColonyPoolTests", dependencies: ["ColonyPool", "ColonyWire", "ColonyWorker"]),
        .testTarget(
            name: "ColonyObservabilityTests",
            dependencies: ["ColonyObservability", "ColonyServer", "ColonyWire", "Colony", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "ColonyWireTests",
            dependencies: [
                "ColonyWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            exclude: []
        ),
        .testTarget(name: "ExamplesTests", dependencies: ["colony-examples"]),
        // Start the real `colony` executable on ephemeral loopback ports.
        .testTarget(
            name: "ColonyIntegrationTests",
            dependencies: [
                "Colony", "ColonyWorker", "colony", "colony-examples",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
