# A conversion script written for RKNN-Toolkit2, in the vendor's own style. The test replaces only the
# import line below. Usage: python vendor_script.py MODEL.onnx OUT.rknn
import sys

import numpy as np
from rknn.api import RKNN

if __name__ == "__main__":
    model_path, out_path = sys.argv[1], sys.argv[2]
    rknn = RKNN(verbose=False)

    print("--> Config model")
    rknn.config(mean_values=[[127.5, 127.5, 127.5]], std_values=[[127.5, 127.5, 127.5]], target_platform="rk3588")
    print("done")

    print("--> Loading model")
    ret = rknn.load_onnx(model=model_path, inputs=["x"], input_size_list=[[1, 3, 48, 192]])
    if ret != 0:
        print("Load model failed!")
        exit(ret)
    print("done")

    print("--> Building model")
    ret = rknn.build(do_quantization=False)
    if ret != 0:
        print("Build model failed!")
        exit(ret)
    print("done")

    print("--> Export rknn model")
    ret = rknn.export_rknn(out_path)
    if ret != 0:
        print("Export rknn model failed!")
        exit(ret)
    print("done")

    print("--> Init runtime environment")
    ret = rknn.init_runtime()
    if ret != 0:
        print("Init runtime environment failed!")
        exit(ret)
    print("done")

    print("--> Running model")
    img = np.full((48, 192, 3), 255, dtype=np.uint8)
    img[16:32, 10:150] = 0
    outputs = rknn.inference(inputs=[img])
    print("outputs", outputs[0].shape, float(outputs[0].sum()))
    print("done")

    rknn.release()
