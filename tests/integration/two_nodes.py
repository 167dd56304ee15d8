"""A Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``: a head and one more
node, one CPU each), in its own process so that its Ray state stays apart from the
drivers of the tests.  Prints the head's address; a line ``remove`` on stdin kills the second
node (answered ``removed``); end of input shuts the cluster down."""
import sys

from ray.cluster_utils import Cluster

NODE = dict(num_cpus=1, object_store_memory=300_000_000)


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    try:
        second = cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        print(cluster.address, flush=True)
        for line in sys.stdin:
            if line.strip() == "remove":
                cluster.remove_node(second)
                print("removed", flush=True)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
