"""A client that streams inferences forever; the fault tests kill it with SIGKILL mid-stream.

Usage: python stream_client.py HOST:PORT SHA256 LEASE_S
"""

import itertools
import sys

import numpy as np

from rkfarm.remote.client import AgentClient
from rkfarm_proto.v1 import agent_pb2

address, sha, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
client = AgentClient(address)
session = client.load(agent_pb2.LoadRequest(model_sha256=sha, lease_s=lease, client="doomed")).session_id
image = np.zeros((1, 48, 192, 3), np.uint8)
requests = (AgentClient.infer_request(session, [image], None, None, request_id=i) for i in itertools.count())
for response in client.infer_stream(requests):
    if response.request_id == 5:
        print("streaming", flush=True)
