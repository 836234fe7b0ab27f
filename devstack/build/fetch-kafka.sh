#!/usr/bin/env bash
# Fetches the Apache Kafka broker (KRaft) and its tools from Maven Central with mvn and copies
# every runtime jar into one folder used as the classpath. Usage: fetch-kafka.sh <cache-root> [version]
set -euo pipefail
cache_root=${1:?cache root}
version=${2:-4.1.1}
log4j=2.25.3
slf4j=2.0.17
out="$cache_root/kafka-$version"
if [[ -f "$out/.complete" ]]; then echo "kafka $version: cached in $out"; exit 0; fi
mkdir -p "$out/pom" "$out/libs"
cat > "$out/pom/pom.xml" <<XML
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>smartflow.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$log4j</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$log4j</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$slf4j</version></dependency>
  </dependencies>
</project>
XML
mvn -q -B -f "$out/pom/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/libs"
touch "$out/.complete"
echo "kafka $version: jars in $out/libs ($(ls "$out/libs" | wc -l) files)"
