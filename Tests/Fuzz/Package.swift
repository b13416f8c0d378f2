// swift-tools-version:6.1
// libFuzzer harness for Colony's wire protocol. Build and run (from this folder):
//   swift build -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
//   .build/debug/colony-fuzz -max_total_time=60 -max_len=4096 -malloc_limit_mb=64
// .ci/run does exactly this for about a minute.
import PackageDescription

let package = Package(
    name: "ColonyFuzz",
    dependencies: [
        .package(name: "Colony", path: "../.."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "colony-fuzz",
            dependencies: [
                .product(name: "ColonyWire", package: "Colony"),
                .product(name: "ColonyServer", package: "Colony"),
                .product(name: "NIOCore", package: "swift-nio"),
            ])
    ],
    swiftLanguageModes: [.v6]
)
